"""The lisa_ros node across real processes over DDS.

Processes: the node (test/support/lisa_node_with_faults.py: the real node, plus fault injection
for failures that cannot happen on demand here), a camera publisher (test/support/camera_publisher.py)
and this test process as the client. The model is a released-layout checkpoint written by the
tests whose random weights say [SEG] often (lisa_ros.testing.checkpoints, emit_seg=True).
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from lisa_ros.msg import SegmentationResult
from lisa_ros.ros.conversions import image_to_numpy, numpy_to_image
from lisa_ros.ros.qos import REQUEST_QOS, action_qos
from lisa_ros.srv import ReasonSegment

pytestmark = pytest.mark.ros
Codes = ReasonSegment.Response
K = [525.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_lisa_checkpoint(tmp_path_factory.mktemp("node") / "lisa", emit_seg=True)


def node_arguments(checkpoint, **overrides):
    params = {
        "model": str(checkpoint),
        # The tiny model's frequent [SEG] was chosen from its fp32 greedy output; "auto" would be
        # bf16 on a CPU with bf16 instructions (the embedded-model tests cover "auto").
        "precision": "fp32",
        "cameras": "['front','wrist','still','idle','packed']",
        "front.image_topic": "/front/color/image_raw",
        "front.depth_topic": "/front/depth/image_raw",
        "front.camera_info_topic": "/front/color/camera_info",
        "wrist.image_topic": "/wrist/color/image_raw/compressed",
        "wrist.compressed": "true",
        "still.image_topic": "/still/color/image_raw",
        "idle.image_topic": "/idle/color/image_raw",
        # Fed by the tests themselves (compressed depth sent on a colour topic).
        "packed.image_topic": "/packed/color/image_raw/compressed",
        "packed.compressed": "true",
        "queue_depth": "1",
        # Generous, so a camera process stalled by a loaded 2-core CI machine is not "stale";
        # the stale-frame test waits past it.
        "max_frame_age": "5.0",
        "max_new_tokens": "16",
        # The test model says [SEG] every few tokens: the default limit of 8 masks would end the
        # long generations that the deadline, cancel and deactivate tests rely on.
        "max_masks": "256",
        "max_command_length": "200",
    }
    params.update(overrides)
    args = ["--ros-args"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    return args


class Client:
    """This process's side: service/action/lifecycle/parameter clients and output recorders."""

    def __init__(self, ctx, node_name="/lisa_ros"):
        self.node = rclpy.create_node("test_node_client", context=ctx)
        self.executor = MultiThreadedExecutor(num_threads=4, context=ctx)
        self.executor.add_node(self.node)
        self.service = self.node.create_client(ReasonSegment, f"{node_name}/reason_segment", qos_profile=REQUEST_QOS)
        self.action = ActionClient(self.node, ReasonSegmentAction, f"{node_name}/reason_segment", **action_qos())
        self.get_state = self.node.create_client(GetState, f"{node_name}/get_state")
        self.change_state = self.node.create_client(ChangeState, f"{node_name}/change_state")
        self.set_parameters = self.node.create_client(SetParameters, f"{node_name}/set_parameters")
        self.received: dict[str, list] = {k: [] for k in ("result", "mask", "explanation", "debug_image", "markers", "diagnostics")}
        record = lambda key: (lambda msg: self.received[key].append(msg))  # noqa: E731
        self.node.create_subscription(SegmentationResult, f"{node_name}/result", record("result"), 10)
        self.node.create_subscription(Image, f"{node_name}/mask", record("mask"), 10)
        self.node.create_subscription(String, f"{node_name}/explanation", record("explanation"), 10)
        # Default (reliable) QoS: the debug image reaches an ordinary subscriber, not only best effort.
        self.node.create_subscription(Image, f"{node_name}/debug_image", record("debug_image"), 10)
        self.node.create_subscription(MarkerArray, f"{node_name}/markers", record("markers"), 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", record("diagnostics"), 10)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def wait(self, future, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), "no answer in time"
        return future.result()

    def ask(self, timeout=60.0, **fields):
        assert self.service.wait_for_service(timeout_sec=30.0)
        return self.wait(self.service.call_async(ReasonSegment.Request(**fields)), timeout)

    def state(self) -> int:
        assert self.get_state.wait_for_service(timeout_sec=30.0)
        return self.wait(self.get_state.call_async(GetState.Request())).current_state.id

    def wait_for_state(self, state_id: int, timeout=60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state() == state_id:
                return
            time.sleep(0.2)
        raise AssertionError(f"node never reached state {state_id} (now {self.state()})")

    def transition(self, transition_id: int) -> bool:
        assert self.change_state.wait_for_service(timeout_sec=30.0)
        request = ChangeState.Request()
        request.transition.id = transition_id
        return self.wait(self.change_state.call_async(request), 120).success

    def set_parameter(self, name: str, value) -> tuple[bool, str]:
        assert self.set_parameters.wait_for_service(timeout_sec=30.0)
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        response = self.wait(self.set_parameters.call_async(SetParameters.Request(
            parameters=[ParameterMsg(name=name, value=pv)])))
        return response.results[0].successful, response.results[0].reason

    def wait_for(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.action.destroy()
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def running(module_ros_domain, module_spawn, checkpoint):
    """A node serving four cameras, and a camera publisher; autostarted and active."""
    module_spawn(module_ros_domain, "camera_publisher.py", "front:rgbd", "wrist:jpeg", "still:mono:once")
    module_spawn(module_ros_domain, "lisa_node_with_faults.py", *node_arguments(checkpoint), ready_timeout=90)
    client = Client(module_ros_domain.context())
    client.env = module_ros_domain.env  # for client processes (examples) on the same domain
    client.wait_for_state(State.PRIMARY_STATE_ACTIVE)
    assert client.wait_for(lambda: client.ask(command="ping", camera="front").error_code != Codes.NO_FRAME, 30)
    yield client
    client.close()


def explicit_image(width=160, height=120, encoding="rgb8", stamp=(1763800000, 123456789), frame="explicit_optical"):
    pixels = np.random.default_rng(3).integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = numpy_to_image(pixels, encoding)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame
    return msg


# ------------------------------------------------------------------------------------ serving


def test_latest_frame_request_carries_the_camera_header_and_source_size_masks(running):
    response = running.ask(command="where is the cup?", camera="front")
    assert response.success, response.message
    result = response.result
    assert result.header.frame_id == "front_color_optical_frame"
    assert result.header.stamp.sec > 0
    assert len(result.masks) == len(result.scores) == len(result.boxes) == len(result.centroids) >= 1
    assert result.answer.count("[SEG]") == len(result.masks)
    for mask in result.masks:
        assert (mask.encoding, mask.width, mask.height) == ("mono8", 640, 480)
        assert mask.header == result.header
        assert set(np.unique(image_to_numpy(mask))) <= {0, 255}
    assert result.session_id and result.timings.total > 0 and result.timings.generation > 0


def test_explicit_image_request_keeps_its_header(running):
    response = running.ask(command="where is the cup?", image=explicit_image())
    assert response.success, response.message
    assert response.result.header.frame_id == "explicit_optical"
    assert (response.result.header.stamp.sec, response.result.header.stamp.nanosec) == (1763800000, 123456789)
    assert (response.result.masks[0].width, response.result.masks[0].height) == (160, 120)
    assert all(math.isnan(c.z) for c in response.result.centroids)  # no depth given


def test_two_cameras_one_model(running):
    front = running.ask(command="find the handle", camera="front")
    wrist = running.ask(command="find the handle", camera="wrist")  # jpeg CompressedImage input
    assert front.success and wrist.success, (front.message, wrist.message)
    assert wrist.result.header.frame_id == "wrist_color_optical_frame"
    assert (wrist.result.masks[0].width, wrist.result.masks[0].height) == (320, 240)


def test_centroid_matches_the_synthetic_depth_geometry(running):
    # The publisher's registered depth is a plane at 2.0 m with a NaN hole at rows 200-259,
    # columns 300-359; intrinsics fx 525, fy 520, cx 319.5, cy 239.5.
    response = running.ask(command="where is the cup?", camera="front")
    assert response.success, response.message
    checked = 0
    for mask_msg, centroid in zip(response.result.masks, response.result.centroids):
        mask = image_to_numpy(mask_msg) > 0
        mask[200:260, 300:360] = False  # no depth there
        rows, cols = np.nonzero(mask)
        if rows.size < 10:
            assert math.isnan(centroid.z)
            continue
        assert centroid.z == pytest.approx(2.0, abs=1e-6)
        assert centroid.x == pytest.approx((np.median(cols) - 319.5) * 2.0 / 525.0, abs=1e-4)
        assert centroid.y == pytest.approx((np.median(rows) - 239.5) * 2.0 / 520.0, abs=1e-4)
        checked += 1
    assert checked >= 1


def test_explicit_depth_and_camera_info_give_3d(running):
    image = explicit_image(640, 480)
    depth = numpy_to_image(np.full((480, 640), 1.5, np.float32), "32FC1")
    info = CameraInfo(width=640, height=480, k=K)
    response = running.ask(command="where is the cup?", image=image, depth=depth, camera_info=info)
    assert response.success, response.message
    assert any(c.z == pytest.approx(1.5) for c in response.result.centroids)


def _optical_rotation() -> np.ndarray:
    """camera_link -> optical (REP 103): optical z = link x, optical x = -link y, optical y = -link z."""
    return np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _transform_msg(parent, child, stamp_s, rotation, translation):
    import transforms3d.quaternions as quaternions
    from geometry_msgs.msg import TransformStamped

    message = TransformStamped()
    message.header.frame_id, message.child_frame_id = parent, child
    message.header.stamp.sec, message.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
    t, q = message.transform.translation, message.transform.rotation
    t.x, t.y, t.z = (float(v) for v in translation)
    q.w, q.x, q.y, q.z = (float(v) for v in quaternions.mat2quat(rotation))
    return message


def test_3d_outputs_in_the_target_frame_through_tf_at_the_image_stamp(running):
    """target_frame base_link, a static mount (base_link -> tf_mount: 1 m up, 0.2 m forward, pitched
    30 deg down), a moving pan joint (tf_mount -> tf_pan: yaw 0 at stamp - 0.25 s, 90 deg at stamp
    + 0.75 s) and the optical rotation (static): every target pose equals the hand-composed chain at
    the image stamp (yaw 22.5 deg) within 1 mm; the point cloud in base_link maps back onto the 1.5 m
    depth plane; labels, depth header and intrinsics are in the result."""
    from tf2_msgs.msg import TFMessage
    from rclpy.qos import DurabilityPolicy, QoSProfile

    def rot(axis, angle):
        c, s_ = math.cos(angle), math.sin(angle)
        return {"x": np.array([[1, 0, 0], [0, c, -s_], [0, s_, c]]),
                "z": np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])}[axis]

    def homogeneous(rotation, translation):
        matrix = np.eye(4)
        matrix[:3, :3], matrix[:3, 3] = rotation, translation
        return matrix

    stamp = (1763800000, 500000000)
    stamp_s = 1763800000.5
    image = explicit_image(640, 480, stamp=stamp, frame="tf_optical")
    depth = numpy_to_image(np.full((480, 640), 1.5, np.float32), "32FC1")
    depth.header.frame_id = image.header.frame_id
    depth.header.stamp.sec, depth.header.stamp.nanosec = stamp[0], stamp[1] + 5_000_000  # 5 ms after colour
    info = CameraInfo(width=640, height=480, k=K)
    assert running.set_parameter("target_frame", "base_link")[0]
    assert running.set_parameter("tf_timeout", 2.0)[0]
    try:
        # No transforms yet: the answer stands, in the optical frame, and says why there are no target poses.
        first = running.ask(command="where is the cup?", image=image, depth=depth, camera_info=info)
        assert first.success, first.message
        assert not first.result.target_poses and "tf_optical -> base_link" in first.result.transform_error
        assert "target_frame" in first.message

        node = running.node
        static_pub = node.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        moving_pub = node.create_publisher(TFMessage, "/tf", 100)
        assert running.wait_for(lambda: moving_pub.get_subscription_count() >= 1, 20)
        mount = homogeneous(rot("x", -math.pi / 6), (0.2, 0.0, 1.0))
        static_pub.publish(TFMessage(transforms=[
            _transform_msg("base_link", "tf_mount", 0.0, mount[:3, :3], mount[:3, 3]),
            _transform_msg("tf_pan", "tf_optical", 0.0, _optical_rotation(), (0.0, 0.0, 0.0)),
            _transform_msg("base_link", "front_color_optical_frame", 0.0, np.eye(3), (0.0, 0.0, 1.0))]))
        moving_pub.publish(TFMessage(transforms=[
            _transform_msg("tf_mount", "tf_pan", stamp_s - 0.25, rot("z", 0.0), (0, 0, 0)),
            _transform_msg("tf_mount", "tf_pan", stamp_s + 0.75, rot("z", math.pi / 2), (0, 0, 0))]))

        response = running.ask(command="where is the cup?", image=image, depth=depth, camera_info=info,
                               point_cloud=True)
        assert response.success, response.message
        result = response.result
        assert result.transform_error == "", result.transform_error
        count = len(result.masks)
        assert len(result.poses) == len(result.extents) == len(result.valid_points) == len(result.target_poses) == count
        base_from_optical = mount @ homogeneous(rot("z", math.pi / 8), (0, 0, 0)) @ homogeneous(_optical_rotation(), (0, 0, 0))
        import transforms3d.quaternions as quaternions

        checked = 0
        for optical, target, valid in zip(result.poses, result.target_poses, result.valid_points):
            assert target.header.frame_id == "base_link" and target.header.stamp == image.header.stamp
            assert optical.header.frame_id == "tf_optical"
            if valid == 0:
                assert math.isnan(target.pose.position.x)
                continue
            p = optical.pose.position
            expected = (base_from_optical @ np.array([p.x, p.y, p.z, 1.0]))[:3]
            got = target.pose.position
            np.testing.assert_allclose([got.x, got.y, got.z], expected, atol=1e-3)
            q_opt, q_tgt = optical.pose.orientation, target.pose.orientation
            rotation = quaternions.quat2mat((q_tgt.w, q_tgt.x, q_tgt.y, q_tgt.z))
            np.testing.assert_allclose(rotation, base_from_optical[:3, :3] @ quaternions.quat2mat(
                (q_opt.w, q_opt.x, q_opt.y, q_opt.z)), atol=1e-6)
            checked += 1
        assert checked >= 1

        cloud = result.point_cloud
        assert cloud.header.frame_id == "base_link" and cloud.width == sum(result.valid_points) and cloud.point_step == 16
        points = np.frombuffer(bytes(cloud.data), np.dtype({"names": ["x", "y", "z", "label"],
                               "formats": ["<f4", "<f4", "<f4", "<u2"], "offsets": [0, 4, 8, 12], "itemsize": 16}))
        xyz = np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float64)
        back = (np.linalg.inv(base_from_optical) @ np.c_[xyz, np.ones(len(xyz))].T)[:3].T
        np.testing.assert_allclose(back[:, 2], 1.5, atol=1e-3)  # onto the depth plane, within 1 mm
        assert set(np.unique(points["label"])) <= set(range(1, count + 1))

        labels = image_to_numpy(result.instance_labels)
        assert result.instance_labels.encoding == "16UC1" and labels.shape == (480, 640)
        first_mask = image_to_numpy(result.masks[0]) > 0
        assert (labels[first_mask] == 1).all() and (labels[labels > 0] <= count).all()
        assert result.depth_header == depth.header and list(result.intrinsics) == [525.0, 520.0, 319.5, 239.5]

        # examples/grasp_target.py on the live camera: its target in base_link, 1 m above the optical
        # frame (a static edge), the same object the node's own optical pose describes.
        import json
        import subprocess
        import sys
        from pathlib import Path

        example = Path(__file__).parents[1] / "examples" / "grasp_target.py"
        run = subprocess.run([sys.executable, str(example), "where is the cup?", "--camera", "front", "--topic", ""],
                             capture_output=True, text=True, timeout=120, env=running.env)
        assert run.returncode == 0, run.stdout + run.stderr
        target = json.loads(run.stdout.strip().splitlines()[-1])
        assert target["frame_id"] == "base_link" and target["transform_error"] == ""
        assert target["valid_points"] >= 50 and target["position"][2] == pytest.approx(3.0, abs=1e-3)  # 2 m plane + 1 m
    finally:
        assert running.set_parameter("target_frame", "")[0]


def test_outputs_are_published_with_the_source_header(running):
    before = {k: len(v) for k, v in running.received.items()}
    response = running.ask(command="where is the cup?", camera="front")
    assert response.success
    stamp = response.result.header.stamp
    assert running.wait_for(lambda: all(len(running.received[k]) > before[k] for k in
                                        ("result", "mask", "explanation", "markers")))
    assert running.received["result"][-1].header.stamp == stamp
    # Subscribers see a digest of the session id, never the id that continues the conversation.
    published_session = running.received["result"][-1].session_id
    assert published_session.startswith("sha256:") and response.result.session_id not in published_session
    mask = running.received["mask"][-1]
    assert mask.header.stamp == stamp and mask.encoding == "mono8"
    markers = running.received["markers"][-1].markers
    assert markers[0].action == markers[0].DELETEALL
    assert all(m.header.stamp == stamp and m.header.frame_id == "front_color_optical_frame" for m in markers)
    assert running.wait_for(lambda: len(running.received["debug_image"]) > before["debug_image"])
    assert running.received["debug_image"][-1].header.frame_id == "front_color_optical_frame"


def test_sessions_continue_or_are_refused(running):
    first = running.ask(command="where is the cup?", image=explicit_image())
    second = running.ask(command="and the plate?", image=explicit_image(), session_id=first.result.session_id)
    assert second.success and second.result.session_id == first.result.session_id
    unknown = running.ask(command="and the plate?", image=explicit_image(), session_id="no-such-session")
    assert not unknown.success and unknown.error_code == Codes.UNKNOWN_SESSION


# ------------------------------------------------------------------------------------ bad input


def _bad_images():
    truncated = explicit_image()
    truncated.data = bytes(truncated.data)[:-7]
    unsupported = explicit_image()
    unsupported.encoding = "yuv420"  # planar I420: not a sensor_msgs encoding
    zero = Image(height=0, width=5, encoding="rgb8", step=15)
    return {"truncated": truncated, "unsupported": unsupported, "zero-sized": zero}


@pytest.mark.parametrize("case", ["empty", "too long", "truncated", "unsupported", "zero-sized",
                                  "no frame", "stale", "unknown camera", "OOM", "failure"])
def test_bad_input_gets_a_reason_and_the_node_keeps_serving(running, case):
    fields = {"command": "where is the cup?", "image": explicit_image()}
    expected = {"empty": Codes.INVALID_COMMAND, "too long": Codes.INVALID_COMMAND, "truncated": Codes.INVALID_IMAGE,
                "unsupported": Codes.INVALID_IMAGE, "zero-sized": Codes.INVALID_IMAGE, "no frame": Codes.NO_FRAME,
                "stale": Codes.STALE_FRAME, "unknown camera": Codes.UNKNOWN_CAMERA,
                "OOM": Codes.MODEL_ERROR, "failure": Codes.MODEL_ERROR}[case]
    if case == "empty":
        fields["command"] = "   "
    elif case == "too long":
        fields["command"] = "x" * 201
    elif case in _bad_images():
        fields["image"] = _bad_images()[case]
    elif case in ("no frame", "stale", "unknown camera"):
        del fields["image"]
        fields["camera"] = {"no frame": "idle", "stale": "still", "unknown camera": "nope"}[case]
        if case == "stale":
            # "still" sent 5 frames when the node subscribed, then stopped; max_frame_age is 5 s.
            assert running.wait_for(lambda: running.ask(command="x", camera="still").error_code != Codes.NO_FRAME, 10)
            time.sleep(5.2)
    elif case == "OOM":
        fields["command"] = "SIMULATE_OOM where is the cup?"
    elif case == "failure":
        fields["command"] = "SIMULATE_FAILURE where is the cup?"
    response = running.ask(**fields)
    assert not response.success and response.error_code == expected, response.message
    assert response.message
    if case == "OOM":
        assert "out of GPU memory" in response.message
    # ...and the next good request is served.
    assert running.ask(command="where is the cup?", image=explicit_image()).success


def test_depth_of_another_size_is_answered_in_2d_with_the_reason(running):
    image = explicit_image()
    response = running.ask(command="where is the cup?", image=image,
                           depth=numpy_to_image(np.ones((image.height + 12, image.width + 16), np.float32), "32FC1"),
                           camera_info=CameraInfo(width=image.width, height=image.height, k=K))
    assert response.success and response.result.masks, response.message
    assert "depth ignored" in response.message and "registered to colour" in response.message
    assert all(math.isnan(c.z) for c in response.result.centroids)


def test_nan_only_depth_still_segments_with_nan_centroids(running):
    image = explicit_image(640, 480)
    depth = numpy_to_image(np.full((480, 640), np.nan, np.float32), "32FC1")
    response = running.ask(command="where is the cup?", image=image, depth=depth,
                           camera_info=CameraInfo(width=640, height=480, k=K))
    assert response.success and "no valid values" in response.message
    assert all(math.isnan(c.x) and math.isnan(c.z) for c in response.result.centroids)


def test_busy_requests_are_refused_at_once(running):
    assert running.set_parameter("max_new_tokens", 300)[0]
    try:
        futures = [running.service.call_async(ReasonSegment.Request(command="where?", image=explicit_image(), explain=True))
                   for _ in range(4)]
        responses = [running.wait(f, 120) for f in futures]
    finally:
        assert running.set_parameter("max_new_tokens", 16)[0]
    codes = [r.error_code for r in responses]
    assert codes.count(Codes.BUSY) >= 1 and codes.count(Codes.OK) >= 1, codes
    busy = [r for r in responses if r.error_code == Codes.BUSY][0]
    assert "busy" in busy.message


def test_action_streams_feedback_and_masks_and_can_be_cancelled(running):
    assert running.action.wait_for_server(timeout_sec=30)
    feedback = []
    goal = ReasonSegmentAction.Goal(command="where is the cup?", camera="front")
    handle = running.wait(running.action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)))
    outcome = running.wait(handle.get_result_async())
    assert outcome.status == GoalStatus.STATUS_SUCCEEDED and outcome.result.success
    running.wait_for(lambda: any(f.mask_index == 0 for f in feedback), 10)
    stages = [f.stage for f in feedback]
    assert "generating" in stages and "decoding_mask" in stages
    first_mask = next(f for f in feedback if f.mask_index == 0)
    assert first_mask.mask.width == 640 and first_mask.mask.header.frame_id == "front_color_optical_frame"
    assert first_mask.centroid.z == pytest.approx(2.0) or math.isnan(first_mask.centroid.z)

    assert running.set_parameter("max_new_tokens", 2000)[0]
    try:
        feedback.clear()
        goal = ReasonSegmentAction.Goal(command="where is the cup?", image=explicit_image(), explain=True)
        handle = running.wait(running.action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)))
        assert running.wait_for(lambda: any(f.partial_answer for f in feedback), 30)
        running.wait(handle.cancel_goal_async())
        outcome = running.wait(handle.get_result_async(), 60)
    finally:
        assert running.set_parameter("max_new_tokens", 16)[0]
    assert outcome.status == GoalStatus.STATUS_CANCELED
    assert outcome.result.error_code == ReasonSegmentAction.Result.CANCELLED
    assert running.ask(command="where is the cup?", image=explicit_image()).success


def test_lisa_ros_ask_prints_and_saves_a_result(running, module_ros_domain, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    ask = str(Path(sys.executable).parent / "lisa-ros")
    run = subprocess.run([ask, "ask", "where is the cup?", "--camera", "front", "--action", "--out", str(tmp_path)],
                         env=module_ros_domain.env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    assert printed["success"] and printed["frame_id"] == "front_color_optical_frame" and printed["masks"]
    assert "decoding_mask" in run.stderr  # progress from the action's feedback
    assert (tmp_path / printed["masks"][0]).is_file() and (tmp_path / "result.json").is_file()
    refused = subprocess.run([ask, "ask", "where?", "--camera", "nope"], env=module_ros_domain.env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and json.loads(refused.stdout)["error_code"] == Codes.UNKNOWN_CAMERA


def test_parameters_are_validated(running):
    assert running.set_parameter("max_new_tokens", 0)[0] is False       # out of range
    ok, reason = running.set_parameter("quantization", "4bit")          # needs a reload
    assert ok is False and "unconfigured" in reason
    assert running.set_parameter("queue_depth", 3)[0] is False          # read-only
    ok, reason = running.set_parameter("model", "/etc/../root/model")   # outside model_roots
    assert ok is False and "model_roots" in reason
    ok, reason = running.set_parameter("model", "embedded")             # inside; refused only as a reload
    assert ok is False and "unconfigured" in reason
    assert running.set_parameter("segment_suffix", "Please segment it.")[0] is True
    assert running.set_parameter("segment_suffix", "Please output segmentation mask.")[0] is True


def test_diagnostics_report_model_requests_and_cameras(running):
    running.ask(command="where is the cup?", camera="front")
    count = len(running.received["diagnostics"])
    assert running.wait_for(lambda: len(running.received["diagnostics"]) > count + 1, 10)
    statuses = {s.name: s for s in running.received["diagnostics"][-1].status}
    model = statuses["lisa_ros: model"]
    values = {kv.key: kv.value for kv in model.values}
    assert values["state"] == "active" and values["device"] == "cpu"
    assert int(values["requests_served"]) >= 1 and float(values["mean_total_s"]) > 0
    # The rate covers the last 30 frames: after the heavy tests before this one it may still
    # span a stall of the loaded machine, so wait for the idle node to report the camera's rate.
    def front_rate() -> float:
        latest = {s.name: s for s in running.received["diagnostics"][-1].status}
        return float({kv.key: kv.value for kv in latest["lisa_ros: camera front"].values}["rate_hz"])

    assert running.wait_for(lambda: front_rate() > 5, 15), front_rate()
    assert statuses["lisa_ros: camera idle"].message == "no frame received yet"


# ------------------------------------------------------------------------------------ replayed bug reports
# Inputs made from public bug reports against ROS 2 image pipelines (issue 13): each failed before
# its fix (MODEL_ERROR, a wrong answer, a blocked queue) and covers its kind.


def _rgb_message(width: int, height: int, step: int, data: bytes) -> Image:
    return Image(width=width, height=height, encoding="rgb8", step=step, data=data)


def test_the_same_bytes_with_another_layout_are_another_image(running):
    """64x48 rgb8 (step 192) then the same bytes as 64x24 with 192 bytes of row padding: two
    images; the frame cache must not answer the second with the first's encoding."""
    data = np.random.default_rng(5).integers(0, 255, 64 * 48 * 3, dtype=np.uint8).tobytes()
    first = running.ask(command="where is the cup?", image=_rgb_message(64, 48, 192, data))
    second = running.ask(command="where is the cup?", image=_rgb_message(64, 24, 384, data))
    assert first.success and second.success, second.message
    assert all((m.height, m.width) == (48, 64) for m in first.result.masks)
    assert second.result.masks and all((m.height, m.width) == (24, 64) for m in second.result.masks)


def test_the_job_queue_frees_a_slot_when_a_waiting_job_leaves():
    from lisa_ros.ros.serving import Job, JobQueue

    jobs = JobQueue(2)
    first, second, third = Job(None), Job(None), Job(None)
    assert jobs.put(first) and jobs.put(second) and not jobs.put(third)  # full: BUSY
    assert jobs.remove(second) and not jobs.remove(second) and len(jobs) == 1
    assert jobs.put(third) and jobs.put(None) and len(jobs) == 2  # the stop signal takes no slot
    assert jobs.get() is first and jobs.get() is third and jobs.get() is None


def test_the_job_queue_says_empty_after_a_timeout_and_still_hands_out_the_stop_signal():
    from lisa_ros.ros.serving import EMPTY, Job, JobQueue

    jobs = JobQueue(1)
    started = time.monotonic()
    assert jobs.get(0.05) is EMPTY and time.monotonic() - started >= 0.04
    job = Job(None)
    assert jobs.put(job) and jobs.get(0.05) is job
    assert jobs.put(None) and jobs.get(0.05) is None


class _CountingEncoder:
    """Stands in for LisaEngine.encode_frame (the ROS-side logic under test needs no model)."""

    def __init__(self):
        self.frames = 0
        self.prefilled = []

    def encode_frame(self, rgb, prefill=False):
        self.frames += 1
        self.prefilled.append(prefill)
        return f"encoded-{self.frames}"


def test_encode_ahead_encodes_the_default_cameras_newest_frame_and_hands_it_out_only_while_fresh():
    from builtin_interfaces.msg import Time

    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.parameters import LiveParameters
    from lisa_ros.ros.request import RequestHandler, frame_source
    from lisa_ros.sessions import FrameCache, SessionStore

    monotonic, wall = [100.0], [1000.0]
    cameras = {name: CameraInput(name, clock=lambda: monotonic[0], stamp_clock=lambda: wall[0])
               for name in ("front", "wrist")}

    def publish(name="front", age_s=0.0, encoding="rgb8"):
        message = numpy_to_image(np.zeros((8, 8, 3), np.uint8), "rgb8")
        message.encoding = encoding
        stamp = wall[0] - age_s
        message.header.stamp = Time(sec=int(stamp), nanosec=int(stamp % 1 * 1e9))
        cameras[name].on_color(message)

    def live(**changes):
        values = dict(max_new_tokens=16, max_masks=8, stop_after_seg=True, draft_tokens=8, segment_suffix="", explain_suffix="",
                      max_command_length=100, max_image_pixels=10**6, max_frame_age=1.0, request_timeout=300.0,
                      encode_ahead=True, publish_debug_image=False, publish_markers=False, target_frame="",
                      tf_timeout=0.2)
        return LiveParameters(**{**values, **changes})

    parameters = [live()]
    encoder, cache, stopping = _CountingEncoder(), FrameCache(4), threading.Event()
    handler = RequestHandler(encoder, SessionStore(), cache, cameras, "front", 600.0, None, lambda: parameters[0])
    assert not handler.idle(stopping) and handler.usable_ahead(parameters[0]) is None  # no frame yet
    publish("wrist")
    assert not handler.idle(stopping)  # only the default camera is encoded ahead
    publish()
    assert handler.idle(stopping) and encoder.frames == 1 and ("front", 1) in cache
    assert not handler.idle(stopping) and encoder.frames == 1  # the same newest frame: nothing to do
    assert handler.usable_ahead(parameters[0]).sequence == 1
    assert handler.usable_ahead(live(encode_ahead=False)) is None
    # a newer frame within one encoding (plus two idle polls) of it: still taken
    monotonic[0] += 0.05
    publish()
    assert handler.usable_ahead(parameters[0]).sequence == 1
    request = ReasonSegment.Request(command="where is the cup?")
    source = frame_source(request, cameras, "front", 1.0, encoded_ahead=handler.usable_ahead(parameters[0]))
    assert source.cache_key == ("front", 1)
    request.min_stamp = cameras["front"].latest().color.header.stamp  # asks for the newer one
    request.min_stamp.nanosec += 1
    wall[0] += 0.001
    monotonic[0] += 0.001
    publish()  # frame 3, stamped after min_stamp
    source = frame_source(request, cameras, "front", 1.0, encoded_ahead=handler.usable_ahead(parameters[0]))
    assert source.cache_key == ("front", 3)
    # a newer frame that came long after it (e.g. the request waited behind others): not taken
    monotonic[0] += 0.5
    publish()
    assert handler.usable_ahead(parameters[0]) is None
    assert handler.idle(stopping) and encoder.frames == 2 and handler.usable_ahead(parameters[0]).sequence == 4
    assert ("front", 1) not in cache and ("front", 4) in cache  # never used: replaced, one slot
    # older than max_frame_age: neither handed out nor encoded ahead
    wall[0] += 2.0
    assert handler.usable_ahead(parameters[0]) is None
    publish(age_s=1.5)
    assert not handler.idle(stopping) and encoder.frames == 2
    # an undecodable frame is skipped (the request about it will say why); the next one is encoded
    publish(encoding="no_such_encoding")
    assert not handler.idle(stopping) and encoder.frames == 2
    publish()
    assert handler.idle(stopping) and encoder.frames == 3
    # no frame cache, or stopping: nothing is encoded
    publish()
    parameters[0] = live()
    handler.frame_cache = FrameCache(0)
    assert not handler.idle(stopping)
    handler.frame_cache = cache
    stopping.set()
    assert not handler.idle(stopping) and encoder.frames == 3
    assert encoder.prefilled == [True] * 3  # frames encoded ahead also hold the prompt's start


def test_the_frame_cache_key_covers_every_field_that_defines_the_pixels():
    from lisa_ros.ros.request import image_cache_key

    base = dict(width=4, height=2, encoding="rgb8", step=12, is_bigendian=0, data=bytes(range(24)))
    key = image_cache_key(Image(**base))
    same_pixels = Image(**base)
    same_pixels.header.frame_id, same_pixels.header.stamp.sec = "elsewhere", 7
    assert image_cache_key(same_pixels) == key  # the same image re-sent: a cache hit
    for field, value in (("width", 2), ("height", 1), ("encoding", "bgr8"), ("step", 24), ("is_bigendian", 1),
                         ("data", bytes(range(1, 25)))):
        assert image_cache_key(Image(**{**base, field: value})) != key, field


@pytest.mark.parametrize("size", [(2048, 1), (1, 2048), (640, 1), (4096, 4)])
def test_images_thinner_than_an_encoder_patch_are_invalid_images(running, size):
    width, height = size
    response = running.ask(command="where is the cup?", image=_rgb_message(width, height, width * 3,
                                                                            bytes(width * height * 3)))
    assert not response.success and response.error_code == Codes.INVALID_IMAGE, response.message
    assert "too thin" in response.message and f"{width}x{height}" in response.message
    assert running.ask(command="where is the cup?", image=explicit_image()).success


@pytest.mark.parametrize("encoding", ["nv12", "nv21", "nv24"])
def test_semi_planar_yuv_cameras_are_served(running, encoding):
    """Raspberry Pi cameras (camera_ros) and OAK cameras publish NV12/NV21/NV24."""
    width, height = 160, 120
    planes = width * height * 3 if encoding == "nv24" else width * height * 3 // 2
    data = np.random.default_rng(9).integers(16, 235, planes, dtype=np.uint8).tobytes()
    response = running.ask(command="where is the cup?",
                           image=Image(width=width, height=height, encoding=encoding, step=width, data=data))
    assert response.success, response.message
    assert all((m.height, m.width) == (height, width) for m in response.result.masks)


def test_compressed_depth_on_a_colour_topic_is_refused(running):
    """A CompressedImage "16UC1; png compressed" (compressed_image_transport's depth) arriving on
    a colour camera's topic is refused as raw 16UC1 is, not segmented as a near-black image."""
    from sensor_msgs.msg import CompressedImage

    from lisa_ros.ros.conversions import numpy_to_compressed

    publisher = running.node.create_publisher(CompressedImage, "/packed/color/image_raw/compressed",
                                              qos_profile_sensor_data)
    depth = numpy_to_compressed((np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 4000), "16UC1", "png")

    def refused_as_depth() -> bool:
        publisher.publish(depth)
        response = running.ask(command="where is the cup?", camera="packed")
        return response.error_code == Codes.INVALID_IMAGE and "depth" in response.message

    try:
        assert running.wait_for(refused_as_depth, 20)
    finally:
        running.node.destroy_publisher(publisher)


def test_a_request_past_its_deadline_ends_running_or_queued(running):
    """timeout: a generation running past it stops at its next token, a request still queued at it
    leaves the queue; both answered DEADLINE_EXCEEDED, and the node serves the next request."""
    assert running.set_parameter("max_new_tokens", 2000)[0]
    try:
        long_running = running.service.call_async(ReasonSegment.Request(
            command="SIMULATE_SLOW where is the cup?", image=explicit_image(), explain=True, timeout=3.0))
        time.sleep(0.5)
        started = time.monotonic()
        queued = running.wait(running.service.call_async(ReasonSegment.Request(
            command="where is the cup?", image=explicit_image(), timeout=1.0)), 30)
        assert queued.error_code == Codes.DEADLINE_EXCEEDED and "queue" in queued.message, queued.message
        assert time.monotonic() - started < 2.5
        first = running.wait(long_running, 30)
        assert first.error_code == Codes.DEADLINE_EXCEEDED and "generating" in first.message, first.message
        assert time.monotonic() - started < 4.0  # stopped at its deadline (3 s), not after 360 slow tokens
    finally:
        assert running.set_parameter("max_new_tokens", 16)[0]
    assert running.ask(command="where is the cup?", image=explicit_image()).success


def test_min_stamp_waits_for_a_newer_frame_or_says_there_is_none(running):
    from builtin_interfaces.msg import Time

    def stamp(offset_s: float) -> Time:
        seconds = time.time() + offset_s  # the camera process stamps with the wall clock
        return Time(sec=int(seconds), nanosec=int((seconds % 1) * 1e9))

    soon = stamp(0.3)
    fresh = running.ask(command="where is the cup?", camera="front", min_stamp=soon)
    assert fresh.success, fresh.message
    taken = fresh.result.header.stamp
    assert (taken.sec, taken.nanosec) >= (soon.sec, soon.nanosec)
    started = time.monotonic()
    never = running.ask(command="where is the cup?", camera="front", min_stamp=stamp(3600.0))
    assert never.error_code == Codes.STALE_FRAME and "min_stamp" in never.message
    assert time.monotonic() - started < 8.0  # bounded wait, not the request's whole timeout
    old_image = running.ask(command="where is the cup?", image=explicit_image(), min_stamp=stamp(0.0))
    assert old_image.error_code == Codes.STALE_FRAME and "min_stamp" in old_image.message


def test_encode_ahead_answers_about_a_frame_encoded_while_idle(running):
    """Through the running node: with encode_ahead the worker encodes the default camera's
    newest frame between requests, so requests about it skip the encoding (image_encoding 0);
    one asking with min_stamp for a frame not yet taken waits for it and encodes it. Off, a new
    frame is encoded in the request. (Which frame a request gets is timing; the rule has its own
    test above, on a fake clock.)"""
    from builtin_interfaces.msg import Time

    def stamp(offset_s: float = 0.0) -> Time:
        seconds = time.time() + offset_s  # the camera process stamps with the wall clock
        return Time(sec=int(seconds), nanosec=int((seconds % 1) * 1e9))

    off = running.ask(command="where is the cup?", camera="front", min_stamp=stamp(0.1))
    assert off.success and off.result.timings.image_encoding > 0, off.message
    assert running.set_parameter("encode_ahead", True)[0]
    try:
        skipped = []
        for _ in range(3):
            time.sleep(0.5)  # new frames (15 Hz) arrive while idle, and are encoded
            ahead = running.ask(command="where is the cup?", camera="front")
            assert ahead.success and ahead.result.header.frame_id == "front_color_optical_frame", ahead.message
            skipped.append(ahead.result.timings.image_encoding == 0.0)
        assert any(skipped), skipped
        newer = stamp(1.5)  # no frame that new exists when the request reaches the worker
        fresh = running.ask(command="where is the cup?", camera="front", min_stamp=newer)
        assert fresh.success and fresh.result.timings.image_encoding > 0, fresh.message
        taken = fresh.result.header.stamp
        assert (taken.sec, taken.nanosec) >= (newer.sec, newer.nanosec)
        own = running.ask(command="where is the cup?", image=explicit_image(width=150))  # its own image
        assert own.success and own.result.header.frame_id == "explicit_optical", own.message
    finally:
        assert running.set_parameter("encode_ahead", False)[0]


def test_a_goal_cancelled_while_queued_ends_at_once_and_frees_its_slot(running):
    """Goal A runs, goal B waits (queue_depth 1) and is cancelled: B ends while A still runs, and
    its slot takes the next request instead of answering BUSY."""
    assert running.action.wait_for_server(timeout_sec=30)
    assert running.set_parameter("max_new_tokens", 2000)[0]
    try:
        feedback = []
        goal = ReasonSegmentAction.Goal(command="where is the cup?", image=explicit_image(), explain=True)
        first = running.wait(running.action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)))
        first_result = first.get_result_async()
        assert running.wait_for(lambda: any(f.partial_answer for f in feedback), 30)
        queued = running.wait(running.action.send_goal_async(
            ReasonSegmentAction.Goal(command="and the plate?", image=explicit_image())))
        assert queued.accepted
        time.sleep(0.5)  # its execute callback has put it in the queue
        running.wait(queued.cancel_goal_async())
        outcome = running.wait(queued.get_result_async(), 20)
        assert not first_result.done(), "the queued goal ended only when the running one did"
        assert outcome.status == GoalStatus.STATUS_CANCELED
        assert outcome.result.error_code == ReasonSegmentAction.Result.CANCELLED and "queue" in outcome.result.message
        # Its slot is free: the next request waits for the worker (no BUSY at once).
        waiting = running.service.call_async(ReasonSegment.Request(command="where?", image=explicit_image()))
        time.sleep(1.0)
        assert not waiting.done() or waiting.result().error_code != Codes.BUSY
        # A may have ended by now (the random tiny model stops at EOS or max_masks; on a fast CPU
        # within a second): cancelled if it still ran, ended normally otherwise. Cancelling a
        # running goal has its own test (test_action_streams_feedback_and_masks_and_can_be_cancelled).
        ended_before_cancel = first_result.done()
        running.wait(first.cancel_goal_async())
        status = running.wait(first_result, 60).status
        assert status == GoalStatus.STATUS_SUCCEEDED if ended_before_cancel else status in (
            GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_SUCCEEDED)  # (it may end as the cancel arrives)
    finally:
        assert running.set_parameter("max_new_tokens", 16)[0]
    assert running.wait(waiting, 60).success


# ------------------------------------------------------------------------------------ one request, in process


class _Recorder:
    def __init__(self):
        self.messages = []

    def publish(self, msg):
        self.messages.append(msg)


class _PublishingNode:
    """Enough of a node for lisa_ros.ros.outputs.Publishers: records what is published, by topic."""

    def __init__(self):
        self.topics: dict[str, _Recorder] = {}

    def create_publisher(self, _msg_type, name, _qos, **_options):
        return self.topics.setdefault(name, _Recorder())


class _Goal:
    is_cancel_requested = False

    def __init__(self, request):
        self.request = request
        self.feedback = []

    def publish_feedback(self, feedback):
        self.feedback.append(feedback)


class _TwoMaskEngine:
    """Answers every command with two masks (left and right half), streamed through on_mask."""

    def encode_frame(self, rgb):
        return rgb.shape

    def answer(self, frame, command, explain=False, history=None, options=None, on_mask=None, on_token=None,
               should_stop=None):
        from lisa_ros.engine import Answer, DecodedMask, mask_box
        from lisa_ros.model.prompts import Conversation

        # this request's, from the live parameters
        assert options is not None and options.max_new_tokens == 16 and options.draft_tokens == 3
        height, width = frame[:2]
        masks = []
        for index, columns in enumerate((slice(0, width // 2), slice(width // 2, width))):
            mask = np.zeros((height, width), bool)
            mask[:, columns] = True
            masks.append(DecodedMask(index, mask, 0.9, mask_box(mask), index, 0.0))
            if on_mask is not None:
                on_mask(masks[-1])
            on_token("Sure, [SEG]", index + 1)
        conversation = Conversation()
        conversation.ask(command)
        conversation.answer("Sure, [SEG] and [SEG].")
        return Answer(command, "prompt", "Sure, [SEG] and [SEG].", "", masks, [1, 2, 3],
                      {"prefill": 0.01, "decode": 0.02, "mask_decode": 0.005}), conversation


@pytest.mark.parametrize("kind", ["action", "service"])
def test_one_request_converts_each_mask_and_its_3d_once(monkeypatch, kind):
    from lisa_ros.ros import messages, outputs
    from lisa_ros.ros.parameters import LiveParameters
    from lisa_ros.ros.request import RequestHandler
    from lisa_ros.ros.serving import Job
    from lisa_ros.sessions import FrameCache, SessionStore

    converted, located = [], []
    real_mask_to_image, real_geometry = outputs.mask_to_image, messages.geometry
    monkeypatch.setattr(outputs, "mask_to_image", lambda mask, header=None: converted.append(mask) or real_mask_to_image(mask, header))
    monkeypatch.setattr(messages, "geometry", lambda *args: located.append(args) or real_geometry(*args))
    live = LiveParameters(max_new_tokens=16, max_masks=8, stop_after_seg=True, draft_tokens=3, segment_suffix="",
                          explain_suffix="",
                          max_command_length=100, max_image_pixels=10**6, max_frame_age=0.0, request_timeout=300.0, encode_ahead=False,
                          publish_debug_image=True, publish_markers=True, target_frame="", tf_timeout=0.2)
    node = _PublishingNode()
    handler = RequestHandler(_TwoMaskEngine(), SessionStore(), FrameCache(2), {}, "front", 600.0,
                             outputs.Publishers(node), lambda: live)
    fields = dict(command="where is the cup?", image=explicit_image(640, 480),
                  depth=numpy_to_image(np.full((480, 640), 1.5, np.float32), "32FC1"),
                  camera_info=CameraInfo(width=640, height=480, k=K))
    goal = _Goal(ReasonSegmentAction.Goal(**fields)) if kind == "action" else None
    job = Job(goal.request if goal else ReasonSegment.Request(**fields), goal_handle=goal)

    message, timings = handler(job, threading.Event())

    assert message == "" and set(timings) == set(messages.STAGES)
    assert len(located) == 2  # one geometry per mask: feedback, centroids and markers share it
    assert len(converted) == 3  # one Image per mask, plus the union published on ~/mask
    result = job.result
    assert [c.z for c in result.centroids] == [pytest.approx(1.5)] * 2
    (published,) = node.topics["~/result"].messages  # the client's result, its session id as a digest
    assert published.session_id == messages.public_session_id(result.session_id) != result.session_id
    published.session_id = result.session_id
    assert published == result
    assert len(node.topics["~/markers"].messages[0].markers) == 1 + 3 * 2
    assert node.topics["~/debug_image"].messages[0].header == result.header
    if goal is not None:
        streamed = [f for f in goal.feedback if f.mask_index >= 0]
        assert [f.mask for f in streamed] == list(result.masks)
        assert [f.centroid for f in streamed] == list(result.centroids)


def test_frame_sources_are_typed_and_say_what_is_missing():
    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.request import FrameSource, RequestError, decode, frame_source

    cameras = {"front": CameraInput("front")}
    own = frame_source(ReasonSegment.Request(command="x", image=explicit_image()), cameras, "front", 1.0)
    assert isinstance(own, FrameSource) and own.camera == "" and own.cache_key[0] == "request"
    assert own.depth is None and own.camera_info is None and not own.depth_expected
    for camera, code in (("nope", Codes.UNKNOWN_CAMERA), ("", Codes.NO_FRAME)):
        with pytest.raises(RequestError) as refused:
            frame_source(ReasonSegment.Request(command="x", camera=camera), cameras, "front", 1.0)
        assert refused.value.code == code
    cameras["front"].on_color(explicit_image(frame="front_optical"))
    cameras["front"].on_depth(numpy_to_image(np.ones((60, 80), np.float32), "32FC1"))  # another stamp
    latest = frame_source(ReasonSegment.Request(command="x"), cameras, "front", 0.0)
    assert latest.camera == "front" and latest.header.frame_id == "front_optical" and latest.cache_key == ("front", 1)
    assert latest.depth is None and latest.depth_expected
    decoded = decode(latest, 10**6)
    assert decoded.rgb.shape == (120, 160, 3) and decoded.depth_m is None
    assert decoded.notes == ["no depth frame within depth_slop of the colour frame: centroids are NaN"]


# ------------------------------------------------------------------------------------ lifecycle


def test_a_slow_configure_blocks_neither_get_state_nor_refusals(ros_domain, spawn, checkpoint):
    """Configure takes 8 s longer (like loading a 7B model): meanwhile get_state answers at once
    (configuring), a goal is rejected and a service call answered NOT_READY; nothing waits for it."""
    spawn(ros_domain, "lisa_node_with_faults.py", "--slow-configure=8",
          *node_arguments(checkpoint, autostart="false"), ready_timeout=90)
    client = Client(ros_domain.context())
    try:
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        request = ChangeState.Request()
        request.transition.id = Transition.TRANSITION_CONFIGURE
        configuring = client.change_state.call_async(request)
        assert client.wait_for(lambda: client.state() == State.TRANSITION_STATE_CONFIGURING, 5)
        started = time.monotonic()
        assert client.state() == State.TRANSITION_STATE_CONFIGURING
        assert time.monotonic() - started < 2.0  # answered, not queued behind configure
        assert client.action.wait_for_server(timeout_sec=30)
        assert not client.wait(client.action.send_goal_async(ReasonSegmentAction.Goal(command="where?")), 5).accepted
        refused = client.ask(timeout=5, command="where?", image=explicit_image())
        assert refused.error_code == Codes.NOT_READY and "configuring" in refused.message
        assert not configuring.done()  # all of that while configure still ran
        assert client.wait(configuring, 120).success
        assert client.state() == State.PRIMARY_STATE_INACTIVE
    finally:
        client.close()


def test_lifecycle_transitions_and_requests_in_each_state(ros_domain, spawn, checkpoint):
    spawn(ros_domain, "lisa_node_with_faults.py", *node_arguments(checkpoint, autostart="false"), ready_timeout=90)
    client = Client(ros_domain.context())
    try:
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        refused = client.ask(command="where?", image=explicit_image())
        assert refused.error_code == Codes.NOT_READY and "unconfigured" in refused.message
        assert client.action.wait_for_server(timeout_sec=30)  # a goal is rejected, not accepted and aborted
        assert not client.wait(client.action.send_goal_async(ReasonSegmentAction.Goal(command="where?"))).accepted
        assert client.transition(Transition.TRANSITION_CONFIGURE)
        assert client.ask(command="where?", image=explicit_image()).error_code == Codes.NOT_READY
        assert client.transition(Transition.TRANSITION_ACTIVATE)
        assert client.ask(command="where?", image=explicit_image()).success
        assert client.transition(Transition.TRANSITION_DEACTIVATE)
        assert client.ask(command="where?", image=explicit_image()).error_code == Codes.NOT_READY
        assert client.transition(Transition.TRANSITION_CLEANUP)
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        # A reload: model parameters change while unconfigured, then configure loads them.
        assert client.set_parameter("precision", "bf16")[0]
        assert client.transition(Transition.TRANSITION_CONFIGURE)
        assert client.transition(Transition.TRANSITION_ACTIVATE)
        assert client.ask(command="where?", image=explicit_image()).success

        # Deactivating during a long generation stops it and answers it, without waiting for it.
        assert client.set_parameter("max_new_tokens", 4000)[0]
        long_request = client.service.call_async(ReasonSegment.Request(command="where?", image=explicit_image(),
                                                                       explain=True))
        time.sleep(1.0)
        started = time.monotonic()
        assert client.transition(Transition.TRANSITION_DEACTIVATE)
        response = client.wait(long_request, 60)
        assert time.monotonic() - started < 30
        assert response.error_code == Codes.NOT_READY and "deactivated" in response.message
    finally:
        client.close()


def test_an_invalid_parameter_at_start_keeps_the_node_alive_and_says_why(ros_domain, spawn, checkpoint):
    spawn(ros_domain, "lisa_node_with_faults.py", *node_arguments(checkpoint, max_frame_age="2"), ready_timeout=90)
    client = Client(ros_domain.context())
    try:
        assert client.wait_for(lambda: "max_frame_age" in client.ask(command="where?", image=explicit_image()).message, 30)
        response = client.ask(command="where?", image=explicit_image())
        assert response.error_code == Codes.NOT_READY and "2.0 not 2" in response.message
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        client.close()


def test_a_failed_load_leaves_the_node_alive_and_says_why(ros_domain, spawn, tmp_path):
    spawn(ros_domain, "lisa_node_with_faults.py", "--ros-args", "-p", f"model:={tmp_path / 'missing-model'}",
          ready_timeout=90)
    client = Client(ros_domain.context())
    try:
        assert client.wait_for(lambda: client.ask(command="where?", image=explicit_image()).message.count("missing-model"), 30)
        response = client.ask(command="where?", image=explicit_image())
        assert response.error_code == Codes.NOT_READY and "does not exist" in response.message
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert client.wait_for(lambda: any(s.level == s.ERROR for d in client.received["diagnostics"] for s in d.status), 10)
    finally:
        client.close()


def test_a_camera_whose_depth_is_not_registered_is_a_diagnostics_warning():
    from diagnostic_msgs.msg import DiagnosticStatus

    from lisa_ros.ros import diagnostics
    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.request import RequestHandler, decode, frame_source

    camera = CameraInput("front")
    colour = explicit_image()
    depth = numpy_to_image(np.ones((60, 80), np.float32), "32FC1")
    depth.header = colour.header
    camera.on_color(colour)
    camera.on_depth(depth)
    source = frame_source(ReasonSegment.Request(command="x"), {"front": camera}, "front", 0.0)
    frame = decode(source, 10**6)
    assert frame.depth_mismatch and frame.depth_m is None and "registered to colour" in frame.notes[0]
    handler = RequestHandler(None, None, None, {"front": camera}, "front", 600.0, None, None)
    handler.note_depth(source, frame)
    values = diagnostics.camera_values(camera, time.monotonic(), 0.0)  # the frame is stamped in 2025: no age check
    array = diagnostics.build("lisa_ros", None, "active", {}, diagnostics.RequestStats(), [values], {})
    status = array.status[-1]
    assert status.level == DiagnosticStatus.WARN and "registered to colour" in status.message


def test_rectified_images_use_p_raw_ones_k_and_16uc1_follows_depth_scale():
    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.request import decode, frame_source

    colour = explicit_image(640, 480)
    depth = numpy_to_image(np.full((480, 640), 1500, np.uint16), "16UC1")
    depth.header = colour.header
    info = CameraInfo(width=640, height=480, k=K, d=[0.1, -0.05, 0.0, 0.0, 0.0],
                      p=[500.0, 0.0, 322.0, 0.0, 0.0, 498.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def decoded(**camera_options):
        camera = CameraInput("front", **camera_options)
        camera.on_camera_info(info)
        camera.on_color(colour)
        camera.on_depth(depth)
        return decode(frame_source(ReasonSegment.Request(command="x"), {"front": camera}, "front", 0.0), 10**7)

    raw = decoded()
    assert (raw.intrinsics.fx, raw.intrinsics.cx) == (525.0, 319.5)  # K
    assert any("rectified" in note for note in raw.notes)  # d is not zero: 3D is approximate
    assert float(np.nanmedian(raw.depth_m)) == pytest.approx(1.5)  # millimetres
    rectified = decoded(rectified=True, depth_scale=0.0001)
    assert (rectified.intrinsics.fx, rectified.intrinsics.fy, rectified.intrinsics.cx, rectified.intrinsics.cy) == (
        500.0, 498.0, 322.0, 241.0)  # P
    assert not any("rectified" in note for note in rectified.notes)
    assert float(np.nanmedian(rectified.depth_m)) == pytest.approx(0.15)  # 0.1 mm units


def test_intrinsics_follow_the_topic_unless_set():
    from lisa_ros.ros.parameters import CameraConfig, validate_value

    def camera(topic, intrinsics="auto"):
        return CameraConfig("front", topic, False, "", "", 0.02, 0.001, 0.0, intrinsics)

    assert camera("camera/color/image_rect_color").rectified and not camera("camera/color/image_raw").rectified
    assert camera("camera/color/image_raw", "p").rectified and not camera("camera/image_rect", "k").rectified
    assert validate_value("front.intrinsics", "x") and validate_value("front.intrinsics", "p") is None


def test_camera_diagnostics_hold_the_rate_to_its_expected_value():
    from diagnostic_msgs.msg import DiagnosticStatus

    from lisa_ros.ros import diagnostics
    from lisa_ros.ros.cameras import CameraInput

    now = [100.0]
    frame = explicit_image()
    frame.header.frame_id = "front_color_optical_frame"

    def camera_status(period_s: float, expected_hz: float):
        camera = CameraInput("front", clock=lambda: now[0], expected_rate_hz=expected_hz)
        for _ in range(30):
            now[0] += period_s
            camera.on_color(frame)
        values = diagnostics.camera_values(camera, now[0], 0.0)
        return diagnostics.build("lisa_ros", None, "active", {}, diagnostics.RequestStats(), [values], {}).status[-1]

    on_time = camera_status(1 / 30, 30.0)
    assert on_time.level == DiagnosticStatus.OK and on_time.hardware_id == "front_color_optical_frame"
    slow = camera_status(1 / 15, 30.0)  # a USB camera fallen back to half rate
    assert slow.level == DiagnosticStatus.WARN and "expected 30 Hz" in slow.message
    assert float({kv.key: kv.value for kv in slow.values}["jitter_ms"]) == pytest.approx(0.0, abs=1e-6)
    assert camera_status(1 / 15, 0.0).level == DiagnosticStatus.OK  # not checked
    import torch

    assert diagnostics.device_description(torch.device("cpu")).startswith("cpu ")
