"""Recording live topics into a bag (lisa_ros/ros/recording.py): a camera in another process over
DDS, recorded with the compressed transports' layouts, read back with rosbags."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from lisa_ros.ros.recording import recording_qos


def _publisher(qos: QoSProfile):
    return SimpleNamespace(qos_profile=qos)


def test_the_recording_qos_receives_from_every_publisher():
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    assert recording_qos([]).reliability == ReliabilityPolicy.RELIABLE
    assert recording_qos([_publisher(reliable)]).reliability == ReliabilityPolicy.RELIABLE
    mixed = recording_qos([_publisher(reliable), _publisher(qos_profile_sensor_data)])
    assert mixed.reliability == ReliabilityPolicy.BEST_EFFORT and mixed.durability == DurabilityPolicy.VOLATILE
    assert recording_qos([_publisher(latched)]).durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert recording_qos([_publisher(latched), _publisher(reliable)]).durability == DurabilityPolicy.VOLATILE


def test_a_camera_in_another_process_is_recorded_compressed_and_reads_back_lossless(ros_domain, spawn, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image

    from lisa_ros.ros import bags
    from lisa_ros.ros.bag_output import generated_type_hash
    from lisa_ros.ros.conversions import compressed_to_rgb8, depth_to_meters
    from lisa_ros.ros.recording import TopicRecorder

    context = ros_domain.context()
    spawn(ros_domain, "camera_publisher.py", "cam:rgbd")
    node = rclpy.create_node("recorder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + 20
    while not node.get_publishers_info_by_topic("/cam/color/image_raw") and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    topics = {"/cam/color/image_raw": Image, "/cam/depth/image_raw": Image, "/cam/color/camera_info": CameraInfo}
    recorder = TopicRecorder(node, tmp_path / "recording", topics, compress=True)
    assert not (tmp_path / "recording").exists()  # written aside until closed
    deadline = time.monotonic() + 20
    while min(recorder.counts.get(t, 0) for t in ("/cam/color/image_raw/compressed",
                                                  "/cam/depth/image_raw/compressedDepth")) < 5:
        assert time.monotonic() < deadline, recorder.counts
        executor.spin_once(timeout_sec=0.1)
    out = recorder.close()
    node.destroy_node()

    reader = bags.open_bag(out)
    try:
        found = {c.topic: c for c in reader.connections}
        assert set(found) == {"/cam/color/image_raw/compressed", "/cam/depth/image_raw/compressedDepth",
                              "/cam/color/camera_info"}
        assert found["/cam/color/image_raw/compressed"].digest == generated_type_hash("sensor_msgs/msg/CompressedImage")
        colour = [m for m in bags.read_messages(reader, ("/cam/color/image_raw/compressed",))]
        depth_messages = list(bags.read_messages(reader, ("/cam/depth/image_raw/compressedDepth",)))
        infos = [m.msg for m in bags.read_messages(reader, ("/cam/color/camera_info",))]
    finally:
        reader.close()
    depth = [m.msg for m in depth_messages]
    assert len(colour) >= 5 and len(depth) >= 5 and infos and infos[0].k[0] == 525.0
    assert [m.log_ns for m in colour] == sorted(m.log_ns for m in colour)  # receive times
    expected = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)  # camera_publisher's frame
    assert colour[0].msg.header.frame_id == "cam_color_optical_frame"
    assert np.array_equal(compressed_to_rgb8(colour[0].msg), expected)  # PNG: lossless
    assert depth[0].format == "16UC1; compressedDepth png"
    metres = depth_to_meters(depth[0])
    hole = np.zeros(metres.shape, bool)
    hole[200:260, 300:360] = True
    assert np.all(np.abs(metres[~hole] - 2.0) < 5e-4) and not np.any(metres[hole] > 0)  # mm, the hole no return
    assert len(depth_messages[0].raw) < 0.02 * 480 * 640 * 4  # a plane: the PNG is a fraction of the raw 32FC1


def test_an_existing_output_is_never_overwritten(ros_domain, tmp_path):
    import rclpy
    from sensor_msgs.msg import Image

    from lisa_ros.errors import UsageError
    from lisa_ros.ros.recording import TopicRecorder

    (tmp_path / "taken").mkdir()
    node = rclpy.create_node("recorder", context=ros_domain.context())
    with pytest.raises(UsageError, match="already exists"):
        TopicRecorder(node, tmp_path / "taken", {"/x": Image})
    node.destroy_node()
