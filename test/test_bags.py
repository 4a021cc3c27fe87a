"""Reading recorded data (lisa_ros/ros/bags.py): real rosbag2 files in both storage formats,
written with ``rosbags`` from rclpy messages serialised by rclpy, read back as rclpy messages;
the camera's topics found by type and content; a broken or unsuitable bag is one clear error."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image

from lisa_ros.errors import DataError
from lisa_ros.ros import bags
from lisa_ros.ros.conversions import image_to_rgb8, numpy_to_compressed, numpy_to_image

STAMPS_NS = [1_000_000_000 + k * 100_000_000 for k in range(5)]  # 10 Hz from t = 1 s


def _header(msg, stamp_ns: int, frame_id: str):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def write_bag(path, storage: str, topics: dict[str, list[tuple[int, object]]]):
    """A rosbag2 at ``path`` holding ``topics`` ({topic: [(log time ns, rclpy message)]})."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from lisa_ros.ros.bag_output import msgtype_of

    store = get_typestore(Stores.ROS2_KILTED)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        written = []
        for topic, messages in topics.items():
            connection = writer.add_connection(topic, msgtype_of(messages[0][1]), typestore=store)
            written += [(log_ns, connection, msg) for log_ns, msg in messages]
        for log_ns, connection, msg in sorted(written, key=lambda item: item[0]):
            writer.write(connection, log_ns, serialize_message(msg))
    return path


def camera_topics(colour_format: str = "raw"):
    rng = np.random.default_rng(0)
    colour, depth, info = [], [], []
    for k, stamp in enumerate(STAMPS_NS):
        rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        msg = numpy_to_image(rgb, "rgb8") if colour_format == "raw" else numpy_to_compressed(rgb, "rgb8", "png")
        colour.append((stamp + 5_000_000, _header(msg, stamp, "camera_color_optical_frame")))
        depth_mm = np.full((48, 64), 1000 + 10 * k, np.uint16)
        depth.append((stamp + 7_000_000, _header(numpy_to_image(depth_mm, "16UC1"), stamp, "camera_color_optical_frame")))
        camera_info = _header(CameraInfo(), stamp, "camera_color_optical_frame")
        camera_info.width, camera_info.height = 64, 48
        info.append((stamp + 6_000_000, camera_info))
    return {"/camera/color/image_raw": colour, "/camera/aligned_depth_to_color/image_raw": depth,
            "/camera/color/camera_info": info}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3", "one mcap file"])
def test_a_bag_is_read_back_as_rclpy_messages_in_log_time_order(tmp_path, storage):
    topics = camera_topics()
    path = write_bag(tmp_path / "bag", storage.split()[-2] if " " in storage else storage, topics)
    if storage == "one mcap file":  # as `ros2 bag record` leaves it, opened without its metadata.yaml
        [path] = path.glob("*.mcap")
    reader = bags.open_bag(path)
    try:
        found = bags.find_topics(reader)
        assert found == bags.BagTopics("/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw",
                                       "/camera/color/camera_info")
        read = list(bags.read_messages(reader, found.all))
        assert [m.log_ns for m in read] == sorted(t for messages in topics.values() for t, _ in messages)
        colour = [(m.log_ns, m.msg) for m in read if m.topic == found.colour]
        assert all(isinstance(msg, Image) for _, msg in colour)
        for (log_ns, msg), (written_ns, original) in zip(colour, topics[found.colour]):
            assert log_ns == written_ns and msg.header == original.header
            np.testing.assert_array_equal(image_to_rgb8(msg), image_to_rgb8(original))
        window = list(bags.read_messages(reader, (found.colour,), STAMPS_NS[1], STAMPS_NS[3] + 5_000_000))
        assert [m.log_ns for m in window] == [STAMPS_NS[k] + 5_000_000 for k in (1, 2, 3)]
    finally:
        reader.close()


def test_compressed_colour_and_several_streams_are_told_apart(tmp_path):
    topics = camera_topics("png")
    topics["/camera/infra1/image_rect_raw"] = topics["/camera/color/image_raw"]  # a second, non-colour-named stream
    reader = bags.open_bag(write_bag(tmp_path / "bag", "mcap", topics))
    try:
        assert bags.find_topics(reader).colour == "/camera/color/image_raw"  # the one named like colour
        asked = bags.find_topics(reader, colour="/camera/infra1/image_rect_raw")
        assert asked.colour == "/camera/infra1/image_rect_raw" and asked.depth is not None
        with pytest.raises(DataError, match="holds depth images, not colour"):
            bags.find_topics(reader, colour="/camera/aligned_depth_to_color/image_raw")
        with pytest.raises(DataError, match="has no topic /front/image"):
            bags.find_topics(reader, colour="/front/image")
        with pytest.raises(DataError, match="holds sensor_msgs/msg/CameraInfo, not"):
            bags.find_topics(reader, depth="/camera/color/camera_info")
    finally:
        reader.close()
    del topics["/camera/color/image_raw"]
    topics["/left/image"] = topics["/camera/infra1/image_rect_raw"]
    reader = bags.open_bag(write_bag(tmp_path / "two", "mcap", topics))
    try:
        with pytest.raises(DataError, match="several colour image topics .*--camera-topic"):
            bags.find_topics(reader)
    finally:
        reader.close()


def test_bags_that_cannot_be_used_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        bags.open_bag(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a rosbag2 folder"):
        bags.open_bag(tmp_path / "empty")

    topics = camera_topics()
    no_colour = {k: v for k, v in topics.items() if "color/image" not in k}
    reader = bags.open_bag(write_bag(tmp_path / "depth_only", "mcap", no_colour))
    try:
        with pytest.raises(DataError, match="no colour image topic"):
            bags.find_topics(reader)
    finally:
        reader.close()

    for storage in ("mcap", "sqlite3"):  # a recording cut short
        path = write_bag(tmp_path / f"cut_{storage}", storage, topics)
        [stored] = [p for p in path.iterdir() if p.suffix in (".mcap", ".db3")]
        stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])
        with pytest.raises(DataError, match="cannot read the bag"):
            reader = bags.open_bag(path)
            try:
                list(bags.read_messages(reader, bags.find_topics(reader).all))
            finally:
                reader.close()

    with pytest.raises(DataError, match="no Python interface package 'foo_msgs'"):
        bags.message_class("foo_msgs/msg/Bar")


# ---------------------------------------------------------------------------------------------
# Writing (lisa_ros/ros/bag_output.py)


def _outputs():
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
    from visualization_msgs.msg import Marker, MarkerArray

    from lisa_ros.msg import SegmentationResult, SegmentedObject

    result = _header(SegmentationResult(), STAMPS_NS[2], "camera_color_optical_frame")
    result.answer = "I look for something red: it is the red ball on the left [SEG]."
    result.objects = [SegmentedObject(id=7, label="red ball", score=0.9)]
    result.objects[0].mask = numpy_to_image(np.eye(4, dtype=np.uint8) * 255, "mono8")
    detections = Detection2DArray(header=result.header)
    detection = Detection2D(header=result.header, id="7")
    detection.results = [ObjectHypothesisWithPose()]
    detection.results[0].hypothesis.class_id = "red ball"
    detections.detections = [detection]
    markers = MarkerArray(markers=[Marker(header=result.header, id=7, ns="lisa_ros", text="red ball")])
    return {"/lisa_ros/result": result, "/lisa_ros/detections": detections, "/lisa_ros/markers": markers}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_an_output_bag_holds_our_types_with_their_generated_type_hashes(tmp_path, storage):
    from rclpy.serialization import deserialize_message
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from lisa_ros.ros import bag_output
    from test_detections import UPSTREAM_TYPE_HASHES

    input_path = write_bag(tmp_path / "input", "mcap", camera_topics())
    reader = bags.open_bag(input_path)
    recorder = bag_output.BagRecorder(tmp_path / "out", storage)
    try:
        colour = next(c for c in reader.connections if c.topic == "/camera/color/image_raw")
        recorder.copy_topic(colour)
        for _, log_ns, raw in reader.messages(connections=[colour]):
            recorder.write_raw(colour.topic, log_ns, raw)
    finally:
        reader.close()
    outputs = _outputs()
    for topic, msg in outputs.items():
        recorder.write(topic, STAMPS_NS[2], msg)
    assert not (tmp_path / "out").exists()  # only the partial bag until closed
    assert recorder.close(complete=True) == tmp_path / "out"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    reader = bags.open_bag(tmp_path / "out")
    try:
        by_topic = {c.topic: c for c in reader.connections}
        assert set(by_topic) == {"/camera/color/image_raw", *outputs}
        assert by_topic["/camera/color/image_raw"].digest == colour.digest
        result_hash = by_topic["/lisa_ros/result"].digest
        assert result_hash == bag_output.generated_type_hash("lisa_ros/msg/SegmentationResult")
        store = get_typestore(Stores.ROS2_KILTED)  # the definition in the bag hashes the same, independently
        definition = by_topic["/lisa_ros/result"].msgdef.data
        assert "MSG: lisa_ros/SegmentedObject" in definition and "MSG: lisa_ros/Status" in definition
        for block in definition.split("=" * 80 + "\n"):
            name = "lisa_ros/msg/SegmentationResult"
            if block.startswith("MSG: "):
                name, block = block.split("\n", 1)[0][5:], block.split("\n", 1)[1]
                name = name.replace("/", "/msg/") if "/msg/" not in name else name
            store.register(get_types_from_msg(block, name))
        assert store.hash_rihs01("lisa_ros/msg/SegmentationResult") == result_hash
        assert by_topic["/lisa_ros/detections"].digest == UPSTREAM_TYPE_HASHES["Detection2DArray"]
        assert by_topic["/lisa_ros/markers"].digest == get_typestore(Stores.ROS2_KILTED).hash_rihs01(
            "visualization_msgs/msg/MarkerArray")
        read = {c.topic: (log_ns, deserialize_message(bytes(raw), type(outputs[c.topic])))
                for c, log_ns, raw in reader.messages(connections=[by_topic[t] for t in outputs])}
        assert read["/lisa_ros/result"][1].objects[0].label == "red ball"
        # the same messages (compared as bytes: a default pose holds NaN, which equals nothing)
        assert {topic: (log_ns, serialize_message(msg)) for topic, (log_ns, msg) in read.items()} \
            == {topic: (STAMPS_NS[2], serialize_message(msg)) for topic, msg in outputs.items()}
        assert reader.topics["/camera/color/image_raw"].msgcount == len(STAMPS_NS)
    finally:
        reader.close()


def test_an_output_bag_that_fails_leaves_nothing_and_never_overwrites(tmp_path):
    from lisa_ros.errors import UsageError
    from lisa_ros.ros import bag_output

    recorder = bag_output.BagRecorder(tmp_path / "out")
    recorder.write("/lisa_ros/result", 1, _outputs()["/lisa_ros/result"])
    assert recorder.close(complete=False) is None
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        bag_output.BagRecorder(tmp_path / "taken")
    with pytest.raises(UsageError, match="unknown bag storage"):
        bag_output.BagRecorder(tmp_path / "x", "rosbag1")
