"""A ReasonSegment client for a running lisa_ros node: what ``lisa-ros ask`` uses (no ros2 CLI).

:func:`ask` sends one command through the service, or the action (progress lines as feedback
arrives, the goal cancelled on timeout so the node's model is freed for others), and returns a
plain JSON-ready summary of the answer; with ``out`` it also writes ``mask_<id>.png`` (0/255) and
``result.json`` there. It runs its own rclpy context, so it neither needs nor disturbs a global
``rclpy.init``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from lisa_ros.errors import ImageConversionError, LisaError
from lisa_ros.result_file import number, object_entry, result_entry
from lisa_ros.ros.cameras import stamp_seconds
from lisa_ros.ros.messages import CLOUD_DTYPE, STAGES, STATUS_NAMES, duration_seconds
from lisa_ros.ros.qos import REQUEST_QOS, action_qos

# Relative: resolved in the client's namespace (``namespace="robot1"`` -> /robot1/lisa_ros/reason_segment),
# like the node's own ~/reason_segment under ``namespace:=robot1``.
DEFAULT_NAME = "lisa_ros/reason_segment"


# Seconds a client waits past the request's timeout for the node's DEADLINE_EXCEEDED answer.
ANSWER_MARGIN_S = 5.0
# Seconds a client waits for an answer when it sends no timeout (the node's request_timeout default).
DEFAULT_WAIT_S = 300.0


class ClientError(LisaError):
    """The node could not be asked or did not answer (not running, goal refused, timeout, a
    malformed answer); a refusal by the node is not an error (``success`` false in the summary)."""


def format_feedback(feedback) -> str:
    """One progress line for a ReasonSegment action feedback: elapsed seconds, stage, the objects
    it carries (id, label and score) and the answer so far."""
    extra = "".join(f" object #{o.id} {o.label!r} ({o.score:.2f})" for o in feedback.objects)
    return f"[{duration_seconds(feedback.elapsed):6.2f} s] {feedback.stage}{extra} {feedback.partial_answer}"


def _pose(stamped) -> dict | None:
    """A PoseStamped as JSON-ready values (None when empty: no frame_id)."""
    if not stamped.header.frame_id:
        return None
    p, q = stamped.pose.position, stamped.pose.orientation
    return {"frame_id": stamped.header.frame_id, "position": [number(p.x), number(p.y), number(p.z)],
            "orientation": [round(q.x, 6), round(q.y, 6), round(q.z, 6), round(q.w, 6)]}


def summarize(response) -> dict:
    """A ReasonSegment response (or action result) as result.json's object
    (:mod:`lisa_ros.result_file`: success, status, the answer, the source frame, 3D, the objects
    with their poses in the optical frame and target poses, warnings, timings per stage); an
    object's ``mask`` is None until :func:`write_masks` names its file."""
    result = response.result
    labels, info = result.instance_labels, result.camera_info
    sizes = [(labels.height, labels.width), (info.height, info.width)] + [(o.mask.height, o.mask.width)
                                                                          for o in result.objects]
    image_size = next((size for size in sizes if size[0] and size[1]), None)  # none: result_masks none, no 3D
    objects = [object_entry(o.id, o.label, o.score, (o.box.x_offset, o.box.y_offset, o.box.width, o.box.height),
                            pose=_pose(o.pose), extent=(o.extent.x, o.extent.y, o.extent.z),
                            valid_points=o.valid_points, target_pose=_pose(o.target_pose)) for o in result.objects]
    return result_entry(
        status_code=result.status.code, status_name=STATUS_NAMES.get(result.status.code, "?"),
        status_message=result.status.message, command=result.command, answer=result.answer,
        explanation=result.explanation, objects=objects, warnings=list(result.warnings),
        timings={stage: duration_seconds(getattr(result.timings, stage)) for stage in STAGES},
        generated_tokens=result.generated_tokens, image_size=image_size, session_id=result.session_id,
        frame_id=result.header.frame_id, stamp=stamp_seconds(result.header), target_frame=result.target_frame,
        transform_error=result.transform_error, no_3d=result.no_3d, no_target_pose=result.no_target_pose,
        points=result.point_cloud.width * result.point_cloud.height)


def write_masks(result, out: Path) -> list[str | None]:
    """Write each object's mask of a SegmentationResult as ``out/mask_<id>.png`` (0/255); returns
    the file names, in the objects' order. A result without the objects' own masks (the node's
    ``result_masks: label_image``) gives each object its pixels of the label image (an overlap
    goes to the earlier object); one without either (``none``) writes nothing (None names).
    Raises ClientError for a mask that cannot be decoded."""
    import cv2

    from lisa_ros.ros.conversions import image_to_numpy

    out.mkdir(parents=True, exist_ok=True)
    names: list[str | None] = []
    try:
        labels = image_to_numpy(result.instance_labels) if len(result.instance_labels.data) else None
        for index, obj in enumerate(result.objects, 1):
            if len(obj.mask.data):
                pixels = np.asarray(image_to_numpy(obj.mask), np.uint8)
            elif labels is not None:
                pixels = np.where(labels == index, 255, 0).astype(np.uint8)
            else:
                names.append(None)
                continue
            names.append(f"mask_{obj.id}.png")
            cv2.imwrite(str(out / names[-1]), pixels)
    except ImageConversionError as exc:
        raise ClientError(f"a mask in the answer is malformed: {exc}") from exc
    return names


def ask(command: str, *, camera: str = "", image: np.ndarray | None = None,
        frame_id: str = "camera_color_optical_frame", explain: bool = False, session_id: str = "",
        target_frame: str = "", min_stamp: float | str | None = None, point_cloud: bool = False,
        use_action: bool = False, name: str = DEFAULT_NAME, namespace: str = "", wait_s: float = 10.0,
        timeout_s: float | None = None, out: Path | None = None, on_progress: Callable[[str], None] | None = None) -> dict:
    """Ask the node serving ``name`` (service, or action with ``use_action``) and summarize.

    ``image``: ``(H, W, 3)`` uint8 RGB sent with the request (header frame_id ``frame_id``);
    None = the latest frame of ``camera`` ("" = the node's default camera). ``session_id``:
    continue that conversation ("" = a new one). ``target_frame``: the frame for the objects'
    target poses ("" = the node's target_frame parameter). ``min_stamp``: only a frame taken at or
    after it (seconds in the ROS clock, or "now": this client's clock when it asks; None = any).
    ``point_cloud``: the result carries the objects' points (``out`` gets ``points.npy``, a
    structured array x, y, z in metres and label = object id). ``name``: the service/action, resolved in
    ``namespace`` when relative (the default: ``lisa_ros/reason_segment``). ``wait_s``: seconds to wait for the node to be
    discovered; ``timeout_s``: the request's timeout, seconds the node may take (it answers
    DEADLINE_EXCEEDED by then instead of working on); None = the node's ``request_timeout``, and
    this client waits :data:`DEFAULT_WAIT_S` for the answer. ``on_progress``: called with a
    line per action feedback (:func:`format_feedback`). ``out``: folder for ``mask_<id>.png`` and
    ``result.json`` (the summary, each object with ``mask``: its file name).

    Returns :func:`summarize`'s dict (``success`` false when the node found no target, refused or
    failed; ``status`` says which and why). Raises ClientError for an empty command, no server within
    ``wait_s``, a refused goal, no answer within ``timeout_s`` or a malformed mask.
    """
    import rclpy
    from builtin_interfaces.msg import Duration, Time
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor

    from lisa_ros.action import ReasonSegment as ReasonSegmentAction
    from lisa_ros.ros.conversions import numpy_to_image
    from lisa_ros.srv import ReasonSegment

    if not command.strip():
        raise ClientError("the command is empty")
    fields = dict(command=command, camera=camera, explain=explain, session_id=session_id, target_frame=target_frame,
                  point_cloud=point_cloud)
    if timeout_s is not None:
        fields["timeout"] = Duration(sec=int(timeout_s), nanosec=int(timeout_s % 1 * 1e9))
    answer_s = (timeout_s if timeout_s is not None else DEFAULT_WAIT_S) + ANSWER_MARGIN_S
    if image is not None:
        fields["image"] = numpy_to_image(image, "rgb8")
        fields["image"].header.frame_id = frame_id
    name = name.rstrip("/")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("lisa_ros_ask", namespace="/" + namespace.strip("/"), context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def wait_for(future, seconds: float):
        executor.spin_until_future_complete(future, timeout_sec=seconds)
        return future.result() if future.done() else None

    if min_stamp is not None:
        seconds = node.get_clock().now().nanoseconds * 1e-9 if min_stamp == "now" else float(min_stamp)
        fields["min_stamp"] = Time(sec=int(seconds), nanosec=int(round(seconds % 1 * 1e9)) % 10**9)
    action_client = None
    try:
        where = node.resolve_service_name(name)  # what a relative name means in this namespace
        if use_action:
            client = action_client = ActionClient(node, ReasonSegmentAction, name, **action_qos())
            if not client.wait_for_server(timeout_sec=wait_s):
                raise ClientError(f"no ReasonSegment action server at {where} (is lisa_ros_node running, "
                                  "same ROS_DOMAIN_ID?)")
            show = (lambda message: on_progress(format_feedback(message.feedback))) if on_progress else None
            handle = wait_for(client.send_goal_async(ReasonSegmentAction.Goal(**fields), feedback_callback=show),
                              answer_s)
            if handle is None or not handle.accepted:
                raise ClientError("the goal was rejected: the node is busy (its queue is full) or not active; "
                                  "its log and /diagnostics say which, and the service answers with the reason")
            outcome = wait_for(handle.get_result_async(), answer_s)
            if outcome is None:
                # Free the node's model for others instead of leaving the goal running.
                wait_for(handle.cancel_goal_async(), 10)
                raise ClientError(f"no result within {answer_s:g} s (goal cancelled)")
            response = outcome.result
        else:
            client = node.create_client(ReasonSegment, name, qos_profile=REQUEST_QOS)
            if not client.wait_for_service(timeout_sec=wait_s):
                raise ClientError(f"no ReasonSegment service at {where} (is lisa_ros_node running, same ROS_DOMAIN_ID?)")
            response = wait_for(client.call_async(ReasonSegment.Request(**fields)), answer_s)
            if response is None:
                raise ClientError(f"no answer within {answer_s:g} s")
    finally:
        if action_client is not None:
            action_client.destroy()
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()

    summary = summarize(response)
    if out is not None:
        for obj, name in zip(summary["objects"], write_masks(response.result, Path(out))):
            obj["mask"] = name
        if response.result.point_cloud.width:
            np.save(Path(out) / "points.npy", np.frombuffer(bytes(response.result.point_cloud.data), CLOUD_DTYPE))
            summary["points_file"] = "points.npy"
        (Path(out) / "result.json").write_text(json.dumps(summary, indent=2))
    return summary
