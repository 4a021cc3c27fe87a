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
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String
from vision_msgs.msg import Detection2DArray
from visualization_msgs.msg import MarkerArray

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from lisa_ros.msg import SegmentationResult, Status
from lisa_ros.ros.conversions import image_to_numpy, numpy_to_image
from lisa_ros.ros.messages import duration_seconds
from lisa_ros.ros.qos import REQUEST_QOS, action_qos
from lisa_ros.ros.spinning import spin
from lisa_ros.srv import ReasonSegment

pytestmark = pytest.mark.ros
Codes = Status
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
        self.received: dict[str, list] = {k: [] for k in ("result", "mask", "explanation", "debug_image", "markers",
                                                          "detections", "diagnostics")}
        record = lambda key: (lambda msg: self.received[key].append(msg))  # noqa: E731
        self.node.create_subscription(SegmentationResult, f"{node_name}/result", record("result"), 10)
        self.node.create_subscription(Image, f"{node_name}/mask", record("mask"), 10)
        self.node.create_subscription(String, f"{node_name}/explanation", record("explanation"), 10)
        # Default (reliable) QoS: the debug image reaches an ordinary subscriber, not only best effort.
        self.node.create_subscription(Image, f"{node_name}/debug_image", record("debug_image"), 10)
        self.node.create_subscription(MarkerArray, f"{node_name}/markers", record("markers"), 10)
        self.node.create_subscription(Detection2DArray, f"{node_name}/detections", record("detections"), 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", record("diagnostics"), 10)
        self._spinner = threading.Thread(target=spin, args=(self.executor,), daemon=True)
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
    assert client.wait_for(lambda: client.ask(command="ping", camera="front").result.status.code != Codes.NO_FRAME, 30)
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
    assert response.success, response.result.status.message
    result = response.result
    assert result.status.code == Codes.OK
    assert result.header.frame_id == "front_color_optical_frame"
    assert result.header.stamp.sec > 0
    assert len(result.objects) >= 1 and result.answer.count("[SEG]") == len(result.objects)
    ids = [o.id for o in result.objects]
    assert 0 not in ids and ids == sorted(set(ids))  # unique, in the order decoded
    for obj in result.objects:
        assert (obj.mask.encoding, obj.mask.width, obj.mask.height) == ("mono8", 640, 480)
        assert obj.mask.header == result.header and obj.pose.header == result.header
        assert set(np.unique(image_to_numpy(obj.mask))) <= {0, 255}
    assert result.session_id and duration_seconds(result.timings.total) > 0
    assert duration_seconds(result.timings.generation) > 0
    # ids stay unique across answers (the node's counter, not the answer's index)
    again = running.ask(command="where is the cup?", camera="front").result.objects
    assert again and min(o.id for o in again) > max(ids)


def test_explicit_image_request_keeps_its_header(running):
    response = running.ask(command="where is the cup?", image=explicit_image())
    assert response.success, response.result.status.message
    assert response.result.header.frame_id == "explicit_optical"
    assert (response.result.header.stamp.sec, response.result.header.stamp.nanosec) == (1763800000, 123456789)
    assert (response.result.objects[0].mask.width, response.result.objects[0].mask.height) == (160, 120)
    assert all(math.isnan(o.pose.pose.position.z) for o in response.result.objects)  # no depth given
    assert response.result.no_3d and "depth" not in response.result.status.message  # none was expected


def test_two_cameras_one_model(running):
    front = running.ask(command="find the handle", camera="front")
    wrist = running.ask(command="find the handle", camera="wrist")  # jpeg CompressedImage input
    assert front.success and wrist.success, (front.result.status.message, wrist.result.status.message)
    assert wrist.result.header.frame_id == "wrist_color_optical_frame"
    assert (wrist.result.objects[0].mask.width, wrist.result.objects[0].mask.height) == (320, 240)


def test_centroid_matches_the_synthetic_depth_geometry(running):
    # The publisher's registered depth is a plane at 2.0 m with a NaN hole at rows 200-259,
    # columns 300-359; intrinsics fx 525, fy 520, cx 319.5, cy 239.5.
    response = running.ask(command="where is the cup?", camera="front")
    assert response.success, response.result.status.message
    checked = 0
    for obj in response.result.objects:
        centroid = obj.pose.pose.position
        mask = image_to_numpy(obj.mask) > 0
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
    assert response.success, response.result.status.message
    assert any(o.pose.pose.position.z == pytest.approx(1.5) for o in response.result.objects)


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


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _homogeneous(rotation, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, translation
    return matrix


# The TF tree of the target-frame tests: base_link -> tf_mount (static: 1 m up, 0.2 m forward,
# pitched 30 deg down) -> tf_pan (moving: yaw 0 at stamp - 0.25 s, 90 deg at stamp + 0.75 s) ->
# tf_optical (static optical rotation); and base_link -> front_color_optical_frame (static, 1 m up).
TF_STAMP, TF_STAMP_S = (1763800000, 500000000), 1763800000.5
MOUNT = _homogeneous(_rot("x", -math.pi / 6), (0.2, 0.0, 1.0))


def _frame_from_optical(frame: str) -> np.ndarray:
    """The hand-composed transform from tf_optical to ``frame`` at the image stamp (yaw 22.5 deg)."""
    mount_from_optical = _homogeneous(_rot("z", math.pi / 8), (0, 0, 0)) @ _homogeneous(_optical_rotation(), (0, 0, 0))
    return {"base_link": MOUNT @ mount_from_optical, "tf_mount": mount_from_optical}[frame]


def _publish_tf_tree(running) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from tf2_msgs.msg import TFMessage

    node = running.node
    static_pub = node.create_publisher(TFMessage, "/tf_static", QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    moving_pub = node.create_publisher(TFMessage, "/tf", 100)
    assert running.wait_for(lambda: moving_pub.get_subscription_count() >= 1, 20)
    static_pub.publish(TFMessage(transforms=[
        _transform_msg("base_link", "tf_mount", 0.0, MOUNT[:3, :3], MOUNT[:3, 3]),
        _transform_msg("tf_pan", "tf_optical", 0.0, _optical_rotation(), (0.0, 0.0, 0.0)),
        _transform_msg("base_link", "front_color_optical_frame", 0.0, np.eye(3), (0.0, 0.0, 1.0))]))
    moving_pub.publish(TFMessage(transforms=[
        _transform_msg("tf_mount", "tf_pan", TF_STAMP_S - 0.25, _rot("z", 0.0), (0, 0, 0)),
        _transform_msg("tf_mount", "tf_pan", TF_STAMP_S + 0.75, _rot("z", math.pi / 2), (0, 0, 0))]))
    running.static_tf_publisher = static_pub  # kept alive: transient local serves late joiners


def _tf_request(frame: str = "tf_optical", **fields) -> dict:
    """A 640x480 explicit image in ``frame`` at TF_STAMP with a 1.5 m depth plane and K."""
    image = explicit_image(640, 480, stamp=TF_STAMP, frame=frame)
    depth = numpy_to_image(np.full((480, 640), 1.5, np.float32), "32FC1")
    depth.header.frame_id = image.header.frame_id
    depth.header.stamp.sec, depth.header.stamp.nanosec = TF_STAMP[0], TF_STAMP[1] + 5_000_000  # 5 ms after colour
    return dict(command="where is the cup?", image=image, depth=depth, camera_info=CameraInfo(width=640, height=480, k=K),
                **fields)


def _assert_target_poses(objects, frame: str) -> int:
    """Every object with 3D has a target pose in ``frame`` equal to its optical pose mapped by the
    hand-composed chain (1 mm, 1e-6 in rotation); returns how many were checked."""
    import transforms3d.quaternions as quaternions

    frame_from_optical = _frame_from_optical(frame)
    checked = 0
    for obj in objects:
        optical, target = obj.pose, obj.target_pose
        assert optical.header.frame_id == "tf_optical"
        if obj.valid_points == 0:
            assert target.header.frame_id == ""  # no 3D, no target pose
            continue
        assert target.header.frame_id == frame and target.header.stamp == optical.header.stamp
        p = optical.pose.position
        expected = (frame_from_optical @ np.array([p.x, p.y, p.z, 1.0]))[:3]
        got = target.pose.position
        np.testing.assert_allclose([got.x, got.y, got.z], expected, atol=1e-3)
        q_opt, q_tgt = optical.pose.orientation, target.pose.orientation
        rotation = quaternions.quat2mat((q_tgt.w, q_tgt.x, q_tgt.y, q_tgt.z))
        np.testing.assert_allclose(rotation, frame_from_optical[:3, :3] @ quaternions.quat2mat(
            (q_opt.w, q_opt.x, q_opt.y, q_opt.z)), atol=1e-6)
        checked += 1
    return checked


def _cloud_points(cloud) -> np.ndarray:
    """A PointCloud2 read the way PCL's fromROSMsg reads PointXYZL: by its declared fields, which
    must be x, y, z float32 at 0, 4, 8 and label uint32 at 12, point_step 16, little-endian."""
    from sensor_msgs.msg import PointField

    layout = [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields]
    assert layout == [("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
                      ("label", 12, PointField.UINT32, 1)]
    assert cloud.point_step == 16 and not cloud.is_bigendian and cloud.height == 1
    assert cloud.row_step == 16 * cloud.width and len(cloud.data) == cloud.row_step
    return np.frombuffer(bytes(cloud.data), np.dtype({"names": ["x", "y", "z", "label"],
                                                      "formats": ["<f4", "<f4", "<f4", "<u4"],
                                                      "offsets": [0, 4, 8, 12], "itemsize": 16}))


def test_3d_outputs_in_the_target_frame_through_tf_at_the_image_stamp(running):
    """target_frame base_link (the node's parameter): every target pose equals the hand-composed
    chain at the image stamp (yaw 22.5 deg) within 1 mm; without TF the answer stands in the
    optical frame with the no_target_pose flag; the point cloud and ~/points hold the object
    points in base_link as PCL PointXYZL (label = object id); labels, depth header and the
    camera_info used are in the result."""
    assert running.set_parameter("target_frame", "base_link")[0]
    assert running.set_parameter("tf_timeout", 2.0)[0]
    points = []
    subscription = running.node.create_subscription(PointCloud2, "/lisa_ros/points", points.append, 10)
    try:
        # A frame TF does not know: the answer stands, in the optical frame, flagged, saying why.
        first = running.ask(**_tf_request(frame="untracked_optical"))
        assert first.success, first.result.status.message
        result = first.result
        assert result.target_frame == "base_link" and result.no_target_pose
        assert "untracked_optical -> base_link" in result.transform_error and "target_frame" in result.status.message
        assert any(o.valid_points for o in result.objects)
        for obj in result.objects:
            assert obj.target_pose.header.frame_id == ""
            if obj.valid_points:
                assert obj.pose.pose.position.z == pytest.approx(1.5, abs=1e-3)  # the optical pose stands

        _publish_tf_tree(running)
        response = running.ask(**_tf_request(point_cloud=True))
        assert response.success, response.result.status.message
        result = response.result
        assert result.transform_error == "" and not result.no_target_pose and not result.no_3d, result.transform_error
        assert _assert_target_poses(result.objects, "base_link") >= 1

        cloud = result.point_cloud
        assert cloud.header.frame_id == "base_link" and cloud.header.stamp == result.header.stamp
        cloud_points = _cloud_points(cloud)
        assert len(cloud_points) == sum(o.valid_points for o in result.objects)
        for obj in result.objects:  # label = the object's id, one label per object's points
            assert int((cloud_points["label"] == obj.id).sum()) == obj.valid_points
        xyz = np.stack([cloud_points["x"], cloud_points["y"], cloud_points["z"]], axis=1).astype(np.float64)
        back = (np.linalg.inv(_frame_from_optical("base_link")) @ np.c_[xyz, np.ones(len(xyz))].T)[:3].T
        np.testing.assert_allclose(back[:, 2], 1.5, atol=1e-3)  # onto the depth plane, within 1 mm

        # ~/points carries the same cloud to a subscriber (built because someone subscribes).
        assert running.wait_for(lambda: len(points) >= 2, 10)  # one per answer: the untracked one, then this
        assert points[0].header.frame_id == "untracked_optical"  # no transform: the optical frame
        assert points[-1].header.frame_id == "base_link" and bytes(points[-1].data) == bytes(cloud.data)

        labels = image_to_numpy(result.instance_labels)
        assert result.instance_labels.encoding == "16UC1" and labels.shape == (480, 640)
        first_mask = image_to_numpy(result.objects[0].mask) > 0
        assert (labels[first_mask] == 1).all() and (labels[labels > 0] <= len(result.objects)).all()
        assert result.depth_header.frame_id == "tf_optical" and result.depth_header.stamp.nanosec == TF_STAMP[1] + 5_000_000
        assert (result.camera_info.width, result.camera_info.height, list(result.camera_info.k)) == (640, 480, K)

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
        assert target["frame_id"] == "base_link" and target["transform_error"] == "" and not target["no_target_pose"]
        assert target["valid_points"] >= 50 and target["position"][2] == pytest.approx(3.0, abs=1e-3)  # 2 m plane + 1 m
        assert target["id"] > 0
    finally:
        running.node.destroy_subscription(subscription)
        assert running.set_parameter("target_frame", "")[0]


def test_each_request_gets_its_own_target_frame_and_the_first_streamed_object_carries_it(running):
    """Two concurrent requests naming different target frames (the node's parameter is empty) each
    get theirs; an action goal's first object in the feedback already carries its target pose, the
    one the result gives the same object (same id)."""
    _publish_tf_tree(running)
    assert running.set_parameter("tf_timeout", 2.0)[0]
    in_base = running.service.call_async(ReasonSegment.Request(**_tf_request(target_frame="base_link")))
    while True:  # queued behind the first one (queue_depth 1: BUSY until the worker has taken it)
        in_mount = running.wait(running.service.call_async(ReasonSegment.Request(**_tf_request(target_frame="tf_mount"))), 120)
        if in_mount.result.status.code != Codes.BUSY:
            break
        time.sleep(0.02)
    assert duration_seconds(in_mount.result.timings.queue_wait) > 0.05  # it waited behind the first: both in the node
    for response, frame in ((running.wait(in_base, 120), "base_link"), (in_mount, "tf_mount")):
        assert response.success, response.result.status.message
        assert response.result.target_frame == frame and not response.result.no_target_pose
        assert _assert_target_poses(response.result.objects, frame) >= 1
    plain = running.ask(**_tf_request())  # none asked, none set: optical frame only, nothing flagged
    assert plain.result.target_frame == "" and not plain.result.no_target_pose
    assert all(o.target_pose.header.frame_id == "" for o in plain.result.objects)

    assert running.action.wait_for_server(timeout_sec=30)
    feedback = []
    goal = ReasonSegmentAction.Goal(**_tf_request(target_frame="tf_mount"))
    handle = running.wait(running.action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)))
    outcome = running.wait(handle.get_result_async(), 120)
    assert outcome.status == GoalStatus.STATUS_SUCCEEDED and outcome.result.success
    assert running.wait_for(lambda: any(f.objects for f in feedback), 10)
    first = next(f for f in feedback if f.objects).objects[0]
    final = {o.id: o for o in outcome.result.result.objects}[first.id]
    assert first.valid_points > 0 and first.target_pose.header.frame_id == "tf_mount"
    assert first.target_pose == final.target_pose and first.pose == final.pose


def test_detections_reach_a_client_that_imports_only_vision_msgs(running, module_ros_domain, module_spawn):
    """A separate process importing only rclpy and vision_msgs: one Detection2D per object with the
    object's id, box and score; Detection3D boxes (pose + extent) in the target frame when TF
    answered; the publisher's type hash is vision_msgs 4.1.1's."""
    import json

    from test_detections import UPSTREAM_TYPE_HASHES

    listener = module_spawn(module_ros_domain, "detections_listener.py", "/lisa_ros")
    _publish_tf_tree(running)
    assert running.set_parameter("tf_timeout", 2.0)[0]
    assert running.wait_for(lambda: len(running.node.get_subscriptions_info_by_topic("/lisa_ros/detections_3d")) >= 1, 20)

    def received(topic: str) -> dict | None:
        """The listener's last message on ``topic`` (None before one)."""
        messages = [json.loads(line) for line in listener.lines() if line.startswith("{")]
        return next((m for m in reversed(messages) if m["topic"] == topic), None)

    for _ in range(3):  # the node's publishers may match the listener only after a first answer
        count = len(listener.lines())
        response = running.ask(**_tf_request(target_frame="base_link"))
        assert response.success, response.result.status.message
        if running.wait_for(lambda: sum(line.startswith("{") for line in listener.lines()[count:]) >= 2, 10):
            break
    result = response.result
    two_d, three_d = received("detections"), received("detections_3d")
    assert two_d and three_d, listener.lines()[-5:]
    assert two_d["stamp"] == three_d["stamp"] == f"{result.header.stamp.sec}.{result.header.stamp.nanosec:09d}"
    assert two_d["frame_id"] == "tf_optical" and len(two_d["detections"]) == len(result.objects)
    for detection, obj in zip(two_d["detections"], result.objects):
        assert detection["id"] == str(obj.id) and detection["class_id"] == obj.label
        assert detection["score"] == pytest.approx(obj.score, abs=1e-6)
        assert detection["center"] == [obj.box.x_offset + obj.box.width / 2, obj.box.y_offset + obj.box.height / 2]
        assert detection["size"] == [obj.box.width, obj.box.height]
    with_3d = [o for o in result.objects if o.valid_points]
    assert three_d["frame_id"] == "base_link" and [d["id"] for d in three_d["detections"]] == [str(o.id) for o in with_3d]
    for detection, obj in zip(three_d["detections"], with_3d):
        p = obj.target_pose.pose.position
        np.testing.assert_allclose(detection["center"], [p.x, p.y, p.z], atol=1e-9)
        np.testing.assert_allclose(detection["size"], [obj.extent.x, obj.extent.y, obj.extent.z], atol=1e-9)
    hashes = {line.split()[1]: line.split()[2] for line in listener.lines() if line.startswith("hash ")}
    assert hashes == {"detections": UPSTREAM_TYPE_HASHES["Detection2DArray"],
                      "detections_3d": UPSTREAM_TYPE_HASHES["Detection3DArray"]}


def test_an_answer_without_seg_is_no_target_not_an_error(running, module_ros_domain, tmp_path):
    """Answers cut at one token: where that token is not [SEG] the model named no target; that is
    NO_TARGET (served: success false, no objects, answer kept, published on ~/result and as an
    empty Detection2DArray; an action goal SUCCEEDED; `lisa-ros ask` exits 3), never an error;
    where it is [SEG], OK with one object."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import cv2

    commands = ("where is the cup?", "what is red?", "find the handle", "which one rolls?")
    assert running.set_parameter("max_new_tokens", 1)[0]
    before = {k: len(v) for k, v in running.received.items()}
    try:
        responses = [running.ask(command=command, image=explicit_image()) for command in commands]
        no_target = [c for c, r in zip(commands, responses) if "[SEG]" not in r.result.answer]
        assert no_target, [r.result.answer for r in responses]  # the tiny model's first token is rarely [SEG]
        goal = ReasonSegmentAction.Goal(command=no_target[0], image=explicit_image())
        handle = running.wait(running.action.send_goal_async(goal))
        outcome = running.wait(handle.get_result_async())
        image_file = tmp_path / "image.png"
        cv2.imwrite(str(image_file), image_to_numpy(explicit_image())[..., ::-1])  # the same pixels, lossless
        run = subprocess.run([str(Path(sys.executable).parent / "lisa-ros"), "ask", no_target[0], "--image", str(image_file)],
                             env=module_ros_domain.env, capture_output=True, text=True, timeout=120)
    finally:
        assert running.set_parameter("max_new_tokens", 16)[0]
    for response in responses:
        result = response.result
        if "[SEG]" in result.answer:
            assert result.status.code == Codes.OK and response.success and len(result.objects) == 1
        else:
            assert result.status.code == Codes.NO_TARGET and not response.success and not result.objects
            assert result.answer and "no target segmented" in result.status.message
            assert not result.no_3d and not result.no_target_pose
    assert outcome.status == GoalStatus.STATUS_SUCCEEDED and not outcome.result.success  # served, nothing to act on
    assert outcome.result.result.status.code == Codes.NO_TARGET and not outcome.result.result.objects
    assert run.returncode == 3, run.stdout + run.stderr
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    assert printed["status"]["name"] == "NO_TARGET" and printed["objects"] == [] and not printed["success"]
    assert running.wait_for(lambda: len(running.received["result"]) >= before["result"] + len(responses))
    assert any(r.status.code == Codes.NO_TARGET for r in running.received["result"][before["result"]:])
    assert running.wait_for(lambda: any(not d.detections for d in running.received["detections"][before["detections"]:]))


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
    assert not unknown.success and unknown.result.status.code == Codes.UNKNOWN_SESSION


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
            assert running.wait_for(lambda: running.ask(command="x", camera="still").result.status.code != Codes.NO_FRAME, 10)
            time.sleep(5.2)
    elif case == "OOM":
        fields["command"] = "SIMULATE_OOM where is the cup?"
    elif case == "failure":
        fields["command"] = "SIMULATE_FAILURE where is the cup?"
    response = running.ask(**fields)
    assert not response.success and response.result.status.code == expected, response.result.status.message
    assert response.result.status.message
    if case == "OOM":
        assert "out of GPU memory" in response.result.status.message
    # ...and the next good request is served.
    assert running.ask(command="where is the cup?", image=explicit_image()).success


def test_depth_of_another_size_is_answered_in_2d_with_the_reason(running):
    image = explicit_image()
    response = running.ask(command="where is the cup?", image=image,
                           depth=numpy_to_image(np.ones((image.height + 12, image.width + 16), np.float32), "32FC1"),
                           camera_info=CameraInfo(width=image.width, height=image.height, k=K))
    assert response.success and response.result.objects, response.result.status.message
    assert "depth ignored" in response.result.status.message and "registered to colour" in response.result.status.message
    assert response.result.no_3d and all(math.isnan(o.pose.pose.position.z) for o in response.result.objects)


def test_nan_only_depth_still_segments_with_nan_centroids(running):
    image = explicit_image(640, 480)
    depth = numpy_to_image(np.full((480, 640), np.nan, np.float32), "32FC1")
    response = running.ask(command="where is the cup?", image=image, depth=depth,
                           camera_info=CameraInfo(width=640, height=480, k=K))
    assert response.success and "no valid values" in response.result.status.message
    assert response.result.no_3d and all(o.valid_points == 0 for o in response.result.objects)
    assert all(math.isnan(o.pose.pose.position.x) and math.isnan(o.extent.z) for o in response.result.objects)


def test_busy_requests_are_refused_at_once(running):
    assert running.set_parameter("max_new_tokens", 300)[0]
    try:
        futures = [running.service.call_async(ReasonSegment.Request(command="where?", image=explicit_image(), explain=True))
                   for _ in range(4)]
        responses = [running.wait(f, 120) for f in futures]
    finally:
        assert running.set_parameter("max_new_tokens", 16)[0]
    codes = [r.result.status.code for r in responses]
    assert codes.count(Codes.BUSY) >= 1 and codes.count(Codes.OK) >= 1, codes
    busy = [r for r in responses if r.result.status.code == Codes.BUSY][0]
    assert "busy" in busy.result.status.message


def test_action_streams_feedback_and_masks_and_can_be_cancelled(running):
    assert running.action.wait_for_server(timeout_sec=30)
    feedback = []
    goal = ReasonSegmentAction.Goal(command="where is the cup?", camera="front")
    handle = running.wait(running.action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)))
    outcome = running.wait(handle.get_result_async())
    assert outcome.status == GoalStatus.STATUS_SUCCEEDED and outcome.result.success
    running.wait_for(lambda: any(f.objects for f in feedback), 10)
    stages = [f.stage for f in feedback]
    assert "generating" in stages and "decoding_mask" in stages
    streamed = [o for f in feedback for o in f.objects]
    assert [o.id for o in streamed] == [o.id for o in outcome.result.result.objects]  # each object once
    first = streamed[0]
    assert first.mask.width == 640 and first.mask.header.frame_id == "front_color_optical_frame"
    assert first.pose.pose.position.z == pytest.approx(2.0) or math.isnan(first.pose.pose.position.z)

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
    assert outcome.result.result.status.code == Codes.CANCELLED
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
    assert printed["success"] and printed["status"]["name"] == "OK" and printed["frame_id"] == "front_color_optical_frame"
    assert printed["objects"] and all(o["id"] > 0 and o["pose"]["frame_id"] == "front_color_optical_frame"
                                      for o in printed["objects"])
    assert "decoding_mask" in run.stderr and "object #" in run.stderr  # progress from the action's feedback
    mask = tmp_path / printed["objects"][0]["mask"]
    assert mask.name == f"mask_{printed['objects'][0]['id']}.png" and mask.is_file()
    assert json.loads((tmp_path / "result.json").read_text())["objects"] == printed["objects"]
    from test_cli import ASK_RESULT_KEYS  # one result.json format for ask and segment (lisa_ros.result_file)

    assert set(printed) == set(ASK_RESULT_KEYS) and printed["command"] == "where is the cup?"
    assert printed["image_size"] == [480, 640] and printed["timings"]["total"] > printed["timings"]["generation"] > 0
    refused = subprocess.run([ask, "ask", "where?", "--camera", "nope"], env=module_ros_domain.env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and json.loads(refused.stdout)["status"]["code"] == Codes.UNKNOWN_CAMERA
    # a frame taken after the question, the timeout sent to the node, the points
    out = tmp_path / "points"
    fresh = subprocess.run([ask, "ask", "where is the cup?", "--camera", "front", "--min-stamp", "now", "--timeout",
                            "60", "--point-cloud", "--out", str(out)], env=module_ros_domain.env,
                           capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    printed = json.loads(fresh.stdout.strip().splitlines()[-1])
    points = np.load(out / "points.npy")
    assert printed["points"] == len(points) > 0 and set(points["label"]) <= {o["id"] for o in printed["objects"]}
    future = subprocess.run([ask, "ask", "where is the cup?", "--camera", "front", "--min-stamp",
                             str(time.time() + 3600), "--timeout", "1"], env=module_ros_domain.env,
                            capture_output=True, text=True, timeout=60)
    assert future.returncode == 1 and json.loads(future.stdout)["status"]["name"] == "DEADLINE_EXCEEDED"
    bad = subprocess.run([ask, "ask", "x", "--min-stamp", "soon"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "neither 'now' nor seconds" in bad.stderr


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
    assert statuses["lisa_ros: camera idle"].message.startswith(
        "no frame received yet: no publisher on /idle/color/image_raw (sensor_msgs/msg/Image)")


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
    assert first.success and second.success, second.result.status.message
    assert all((o.mask.height, o.mask.width) == (48, 64) for o in first.result.objects)
    assert second.result.objects and all((o.mask.height, o.mask.width) == (24, 64) for o in second.result.objects)


@pytest.mark.parametrize("size", [(2048, 1), (1, 2048), (640, 1), (4096, 4)])
def test_images_thinner_than_an_encoder_patch_are_invalid_images(running, size):
    width, height = size
    response = running.ask(command="where is the cup?", image=_rgb_message(width, height, width * 3,
                                                                            bytes(width * height * 3)))
    assert not response.success and response.result.status.code == Codes.INVALID_IMAGE, response.result.status.message
    assert "too thin" in response.result.status.message and f"{width}x{height}" in response.result.status.message
    assert running.ask(command="where is the cup?", image=explicit_image()).success


@pytest.mark.parametrize("encoding", ["nv12", "nv21", "nv24"])
def test_semi_planar_yuv_cameras_are_served(running, encoding):
    """Raspberry Pi cameras (camera_ros) and OAK cameras publish NV12/NV21/NV24."""
    width, height = 160, 120
    planes = width * height * 3 if encoding == "nv24" else width * height * 3 // 2
    data = np.random.default_rng(9).integers(16, 235, planes, dtype=np.uint8).tobytes()
    response = running.ask(command="where is the cup?",
                           image=Image(width=width, height=height, encoding=encoding, step=width, data=data))
    assert response.success, response.result.status.message
    assert all((o.mask.height, o.mask.width) == (height, width) for o in response.result.objects)


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
        return response.result.status.code == Codes.INVALID_IMAGE and "depth" in response.result.status.message

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
            command="SIMULATE_SLOW where is the cup?", image=explicit_image(), explain=True, timeout=Duration(sec=3)))
        time.sleep(0.5)
        started = time.monotonic()
        queued = running.wait(running.service.call_async(ReasonSegment.Request(
            command="where is the cup?", image=explicit_image(), timeout=Duration(sec=1))), 30)
        assert queued.result.status.code == Codes.DEADLINE_EXCEEDED and "queue" in queued.result.status.message, queued.result.status.message
        assert time.monotonic() - started < 2.5
        first = running.wait(long_running, 30)
        assert first.result.status.code == Codes.DEADLINE_EXCEEDED and "generating" in first.result.status.message, first.result.status.message
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
    assert fresh.success, fresh.result.status.message
    taken = fresh.result.header.stamp
    assert (taken.sec, taken.nanosec) >= (soon.sec, soon.nanosec)
    started = time.monotonic()
    never = running.ask(command="where is the cup?", camera="front", min_stamp=stamp(3600.0))
    assert never.result.status.code == Codes.STALE_FRAME and "min_stamp" in never.result.status.message
    assert time.monotonic() - started < 8.0  # bounded wait, not the request's whole timeout
    old_image = running.ask(command="where is the cup?", image=explicit_image(), min_stamp=stamp(0.0))
    assert old_image.result.status.code == Codes.STALE_FRAME and "min_stamp" in old_image.result.status.message


def test_encode_ahead_answers_about_a_frame_encoded_while_idle(running):
    """Through the running node: with encode_ahead the worker encodes the default camera's
    newest frame between requests, so requests about it skip the encoding (image_encoding 0);
    one asking with min_stamp for a frame not yet taken waits for it and gets that frame (encoded
    in the request, or ahead by the idle worker while the request waited for it: both are right).
    Off, a new frame is encoded in the request. (Which frame a request gets is timing; the rule
    has its own test above, on a fake clock.)"""
    from builtin_interfaces.msg import Time

    def stamp(offset_s: float = 0.0) -> Time:
        seconds = time.time() + offset_s  # the camera process stamps with the wall clock
        return Time(sec=int(seconds), nanosec=int((seconds % 1) * 1e9))

    off = running.ask(command="where is the cup?", camera="front", min_stamp=stamp(0.1))
    assert off.success and duration_seconds(off.result.timings.image_encoding) > 0, off.result.status.message
    assert running.set_parameter("encode_ahead", True)[0]
    try:
        skipped = []
        for _ in range(3):
            time.sleep(0.5)  # new frames (15 Hz) arrive while idle, and are encoded
            ahead = running.ask(command="where is the cup?", camera="front")
            assert ahead.success and ahead.result.header.frame_id == "front_color_optical_frame", ahead.result.status.message
            skipped.append(duration_seconds(ahead.result.timings.image_encoding) == 0.0)
        assert any(skipped), skipped
        newer = stamp(1.5)  # no frame that new exists when the request reaches the worker
        fresh = running.ask(command="where is the cup?", camera="front", min_stamp=newer)
        assert fresh.success, fresh.result.status.message
        taken = fresh.result.header.stamp
        assert (taken.sec, taken.nanosec) >= (newer.sec, newer.nanosec)
        own = running.ask(command="where is the cup?", image=explicit_image(width=150))  # its own image
        assert own.success and own.result.header.frame_id == "explicit_optical", own.result.status.message
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
        assert outcome.result.result.status.code == Codes.CANCELLED and "queue" in outcome.result.result.status.message
        # Its slot is free: the next request waits for the worker (no BUSY at once).
        waiting = running.service.call_async(ReasonSegment.Request(command="where?", image=explicit_image()))
        time.sleep(1.0)
        assert not waiting.done() or waiting.result().result.status.code != Codes.BUSY
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
        assert refused.result.status.code == Codes.NOT_READY and "configuring" in refused.result.status.message
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
        assert refused.result.status.code == Codes.NOT_READY and "unconfigured" in refused.result.status.message
        assert client.action.wait_for_server(timeout_sec=30)  # a goal is rejected, not accepted and aborted
        assert not client.wait(client.action.send_goal_async(ReasonSegmentAction.Goal(command="where?"))).accepted
        assert client.transition(Transition.TRANSITION_CONFIGURE)
        assert client.ask(command="where?", image=explicit_image()).result.status.code == Codes.NOT_READY
        assert client.transition(Transition.TRANSITION_ACTIVATE)
        assert client.ask(command="where?", image=explicit_image()).success
        assert client.transition(Transition.TRANSITION_DEACTIVATE)
        assert client.ask(command="where?", image=explicit_image()).result.status.code == Codes.NOT_READY
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
        assert response.result.status.code == Codes.NOT_READY and "deactivated" in response.result.status.message
    finally:
        client.close()


def test_an_invalid_parameter_at_start_keeps_the_node_alive_and_says_why(ros_domain, spawn, checkpoint):
    spawn(ros_domain, "lisa_node_with_faults.py", *node_arguments(checkpoint, max_frame_age="2"), ready_timeout=90)
    client = Client(ros_domain.context())
    try:
        assert client.wait_for(lambda: "max_frame_age" in client.ask(command="where?", image=explicit_image()).result.status.message, 30)
        response = client.ask(command="where?", image=explicit_image())
        assert response.result.status.code == Codes.NOT_READY and "2.0 not 2" in response.result.status.message
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        client.close()


def test_a_failed_load_leaves_the_node_alive_and_says_why(ros_domain, spawn, tmp_path):
    spawn(ros_domain, "lisa_node_with_faults.py", "--ros-args", "-p", f"model:={tmp_path / 'missing-model'}",
          ready_timeout=90)
    client = Client(ros_domain.context())
    try:
        assert client.wait_for(lambda: client.ask(command="where?", image=explicit_image()).result.status.message.count("missing-model"), 30)
        response = client.ask(command="where?", image=explicit_image())
        assert response.result.status.code == Codes.NOT_READY and "does not exist" in response.result.status.message
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert client.wait_for(lambda: any(s.level == s.ERROR for d in client.received["diagnostics"] for s in d.status), 10)
    finally:
        client.close()


