"""What one request sends out: action feedback while it runs, then the node's output topics.

Each decoded mask becomes a ``SegmentedObject`` once per request (:class:`ObjectOutputs`): its id,
mono8 Image, 3D geometry and, through the request's :class:`~lisa_ros.ros.tf.TargetTransform`,
its pose in the target frame. The action feedback that carries the object the moment it is
decoded, the SegmentationResult, the detections, the point cloud, the rviz markers and the debug
image all reuse it. The message layout itself is :mod:`lisa_ros.ros.messages` (and
:mod:`lisa_ros.ros.detections`); every output carries the source image's stamp.

Topics (all under the node's ``~/``), published for every served request (OK and NO_TARGET):
``result`` (SegmentationResult; its ``session_id`` replaced by
:func:`lisa_ros.ros.messages.public_session_id`), ``mask`` (mono8 union of the masks),
``explanation`` (String), ``detections`` (vision_msgs/Detection2DArray), ``detections_3d``
(vision_msgs/Detection3DArray, in the target frame when TF answered) and ``markers``
(MarkerArray) with reliable QoS; ``debug_image`` (rgb8) and ``debug_image/compressed`` (JPEG,
image_transport's name), reliable, keep last 1, each drawn and sent only while someone subscribes;
``points`` (PointCloud2, PCL PointXYZL: label = object id; built only while someone
subscribes); ``tracks`` (TrackedObjects, every frame a ``~/track`` goal followed, reliable). Every publisher takes QoS overrides
(``qos_overrides./<ns>/lisa_ros/<topic>.publisher.*`` in the parameters file).
"""
from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.geometry import Intrinsics, MaskGeometry
from lisa_ros.msg import SegmentationResult, SegmentedObject, TrackedObjects
from lisa_ros.ros import messages
from lisa_ros.ros.conversions import mask_to_image, numpy_to_compressed, numpy_to_image
from lisa_ros.ros.qos import every_policy
from lisa_ros.ros.tf import TargetTransform

Stage = ReasonSegmentAction.Feedback
FEEDBACK_PERIOD_S = 0.2  # partial-text feedback at most this often (masks are sent at once)


@dataclass(frozen=True)
class ObjectOutput:
    """One decoded mask as it goes out: the engine's mask (``decoded.mask`` (H, W) bool, score,
    box, label), its SegmentedObject (``message``: id, mono8 mask, poses) and its 3D geometry in
    the optical frame (``geometry``, with its points)."""

    decoded: Any  # lisa_ros.engine.DecodedMask
    message: SegmentedObject
    geometry: MaskGeometry


class ObjectOutputs:
    """Converts each mask of one request once: by :meth:`get` as masks stream in, and by
    :meth:`all` for the finished answer (the masks already converted are reused).

    ``header``: the source image's; ``depth_m``: ``(H, W)`` float32 metres registered to the
    colour image, or None; ``intrinsics``: of the colour image, or None (no depth or no
    intrinsics: NaN geometry); ``next_id()``: a new object id (unique within the node's life);
    ``target``: the request's transform into its target frame, looked up by the first object
    with 3D.
    """

    def __init__(self, header, depth_m: np.ndarray | None, intrinsics: Intrinsics | None,
                 next_id: Callable[[], int], target: TargetTransform):
        self._header = header
        self._depth_m = depth_m
        self._intrinsics = intrinsics
        self._next_id = next_id
        self._target = target
        self._done: dict[int, ObjectOutput] = {}

    def get(self, decoded) -> ObjectOutput:
        """``decoded`` (an engine DecodedMask) converted, once per mask index."""
        done = self._done.get(decoded.index)
        if done is None or done.decoded is not decoded:
            shape = messages.geometry(decoded.mask, self._depth_m, self._intrinsics)
            transform = self._target.get() if shape.is_valid else None
            message = messages.segmented_object(self._next_id(), decoded, mask_to_image(decoded.mask, self._header),
                                                shape, self._header, self._target.frame, transform)
            done = self._done[decoded.index] = ObjectOutput(decoded, message, shape)
        return done

    def all(self, masks: list) -> list[ObjectOutput]:
        return [self.get(decoded) for decoded in masks]


def labelled_points(outputs: list[ObjectOutput]) -> list[tuple[int, np.ndarray]]:
    """(object id, ``(N, 3)`` optical-frame points) per object, for :func:`messages.point_cloud`."""
    return [(output.message.id, output.geometry.points) for output in outputs]


class GoalFeedback:
    """The action feedback of one job; for a service request (no goal) every send is a no-op."""

    def __init__(self, goal_handle, received_at: float, period_s: float = FEEDBACK_PERIOD_S):
        self._goal = goal_handle
        self._received_at = received_at  # monotonic seconds
        self._period_s = period_s
        self._last_text = 0.0

    @property
    def streaming(self) -> bool:
        """True for an action goal: masks and text are worth sending as they come."""
        return self._goal is not None

    @property
    def cancel_requested(self) -> bool:
        return self._goal is not None and self._goal.is_cancel_requested

    def _message(self, stage: str):
        return ReasonSegmentAction.Feedback(stage=stage, elapsed=messages.duration(time.monotonic() - self._received_at))

    def stage(self, stage: str) -> None:
        """A stage change (one of the Feedback STAGE_* constants)."""
        if self._goal is not None:
            self._goal.publish_feedback(self._message(stage))

    def object(self, output: ObjectOutput) -> None:
        """An object the moment its mask is decoded (stage decoding_mask), complete: id, label,
        mask, box, score, poses."""
        if self._goal is None:
            return
        feedback = self._message(Stage.STAGE_DECODING_MASK)
        feedback.objects = [output.message]
        self._goal.publish_feedback(feedback)

    def text(self, partial_answer: str, generated_tokens: int) -> None:
        """The answer so far (stage generating), at most once per ``period_s``."""
        now = time.monotonic()
        if self._goal is not None and now - self._last_text >= self._period_s:
            self._last_text = now
            feedback = self._message(Stage.STAGE_GENERATING)
            feedback.partial_answer, feedback.generated_tokens = partial_answer, generated_tokens
            self._goal.publish_feedback(feedback)


class Publishers:
    """The node's output topics (see the module docstring); created once, with the node. Without
    vision_msgs (a ROS 2 install lacking it) the detection topics are off, with one warning."""

    def __init__(self, node):
        # A new profile per publisher (lisa_ros.ros.qos.fresh: overrides apply to it in place).
        reliable = functools.partial(QoSProfile, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # One image (or cloud) per answer: reliable (a default subscriber gets it; a best-effort
        # one too), and only the newest kept, so a slow subscriber does not hold several.
        newest_reliable = functools.partial(QoSProfile, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        # Every publisher takes qos_overrides./lisa_ros/<topic>.publisher.<policy> from the
        # parameters, for every policy (durability transient_local latches a topic).
        overridable = dict(qos_overriding_options=every_policy())
        self._result = node.create_publisher(SegmentationResult, "~/result", reliable(), **overridable)
        self._mask = node.create_publisher(Image, "~/mask", reliable(), **overridable)
        self._explanation = node.create_publisher(String, "~/explanation", reliable(), **overridable)
        self._debug = node.create_publisher(Image, "~/debug_image", newest_reliable(), **overridable)
        # image_transport's name for the same picture as JPEG (a 1080p overlay: ~0.3 MB, not 6 MB)
        self._debug_compressed = node.create_publisher(CompressedImage, "~/debug_image/compressed", newest_reliable(),
                                                       **overridable)
        self._markers = node.create_publisher(MarkerArray, "~/markers", reliable(), **overridable)
        self._points = node.create_publisher(PointCloud2, "~/points", newest_reliable(), **overridable)
        # Every followed frame of every ~/track goal (lisa_ros.ros.tracks).
        self.tracks = node.create_publisher(TrackedObjects, "~/tracks", reliable(), **overridable)
        try:
            from vision_msgs.msg import Detection2DArray, Detection3DArray
        except ImportError as exc:  # a ROS 2 install without vision_msgs: everything else still works
            node.get_logger().warning(f"~/detections and ~/detections_3d are off: {exc} (install ros-<distro>-vision-msgs, "
                                      "or `make install`, which builds it)")
            self._detections = self._detections_3d = None
        else:
            self._detections = node.create_publisher(Detection2DArray, "~/detections", reliable(), **overridable)
            self._detections_3d = node.create_publisher(Detection3DArray, "~/detections_3d", reliable(), **overridable)

    @property
    def points_wanted(self) -> bool:
        """Whether anyone subscribes to ~/points (the cloud is built only then)."""
        return self._points.get_subscription_count() > 0

    def publish(self, result: SegmentationResult, outputs: list[ObjectOutput], rgb: np.ndarray, answer,
                debug_image: bool, markers: bool, cloud: PointCloud2 | None = None) -> None:
        """One served request: ``result`` as sent to the client, ``outputs`` its converted objects,
        ``rgb`` the ``(H, W, 3)`` uint8 source image, ``answer`` the engine's Answer, ``cloud``
        the object points for ~/points (None: nobody asked). The messages are
        :func:`answer_messages`'; the debug images are drawn only for a subscriber."""
        publishers = {"result": self._result, "mask": self._mask, "explanation": self._explanation,
                      "detections": self._detections, "detections_3d": self._detections_3d, "points": self._points,
                      "debug_image": self._debug, "debug_image/compressed": self._debug_compressed,
                      "markers": self._markers}
        wanted = {name for name in ("debug_image", "debug_image/compressed")
                  if debug_image and publishers[name].get_subscription_count() > 0}
        for name, msg in answer_messages(result, outputs, rgb, answer, wanted, markers, cloud,
                                         detections=self._detections is not None):
            publishers[name].publish(msg)


def answer_messages(result: SegmentationResult, outputs: list[ObjectOutput], rgb: np.ndarray, answer,
                    debug_images: set[str], markers: bool, cloud: PointCloud2 | None = None,
                    detections: bool = True) -> list[tuple[str, Any]]:
    """``(topic under ~/, message)`` of everything one served request sends out, in publishing
    order (see the module docstring): the node publishes them, a bag replay records them.
    ``debug_images``: which of "debug_image" and "debug_image/compressed" to draw; ``markers``:
    whether to send ~/markers; ``cloud``: the ~/points cloud, or None; ``detections``: whether
    the vision_msgs topics exist (vision_msgs is importable)."""
    header = result.header
    public = copy.copy(result)  # the client's own result keeps the session id itself
    public.session_id = messages.public_session_id(result.session_id)
    sent: list[tuple[str, Any]] = [("result", public)]
    union = np.zeros(rgb.shape[:2], bool)
    for output in outputs:
        union |= output.decoded.mask
    sent.append(("mask", mask_to_image(union, header)))
    sent.append(("explanation", String(data=result.explanation)))
    if detections:
        from lisa_ros.ros import detections as to_detections

        sent += [("detections", to_detections.detections_2d(result)), ("detections_3d", to_detections.detections_3d(result))]
    if cloud is not None:
        sent.append(("points", cloud))
    if debug_images:  # drawn only for someone
        overlay = messages.debug_overlay(rgb, answer)
        if "debug_image" in debug_images:
            sent.append(("debug_image", numpy_to_image(overlay, "rgb8", header)))
        if "debug_image/compressed" in debug_images:
            sent.append(("debug_image/compressed", numpy_to_compressed(overlay, "rgb8", "jpeg", header)))
    if markers:
        labels = [" ".join(filter(None, (f"#{o.message.id}", o.message.label, f"{o.message.score:.2f}"))) for o in outputs]
        sent.append(("markers", messages.markers(header, [o.geometry for o in outputs], labels)))
    return sent
