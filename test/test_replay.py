"""Replaying recorded data offline (lisa_ros/ros/replay.py, ``lisa-ros replay``): a bag written with
rosbags from a held-out moving scene (colour, registered depth, camera_info, TF), replayed through the
node's request path with the embedded model; the output bag is read back with rosbags."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from lisa_ros.errors import DataError
from lisa_ros.ros import bags
from lisa_ros.ros.conversions import image_to_numpy, numpy_to_image
from test_bags import _header, write_bag

FRAME_NS = 100_000_000  # 10 Hz
START_NS = 5_000_000_000
EVERY = 3
# The answered frames' mean IoU against the ground truth: a floor below what the shipped model
# reaches on this sequence (0.599 with the ninth-run delta, fp32: 0.69, 0.94, 0.77 on frames 0, 3, 6;
# frame 9's answer names another object, IoU 0). Replay slips (a mask of another frame, a resize)
# give ~0 everywhere.
MASK_IOU_FLOOR = 0.45


@pytest.fixture(scope="module")
def sequence():
    from lisa_ros.data.scenes.motion import make_moving_sequence

    return make_moving_sequence(11, 0, "move", split="test", size=(320, 240), seconds=1.0, fps=10.0)


@pytest.fixture(scope="module")
def recorded(sequence, tmp_path_factory):
    """The sequence as a camera driver records it: colour at its stamp, depth and camera_info a
    few milliseconds later in log time."""
    colour, depth, info = [], [], []
    height, width = sequence.frames[0].shape[:2]
    for k, rgb in enumerate(sequence.frames):
        stamp = START_NS + k * FRAME_NS
        colour.append((stamp + 4_000_000, _header(numpy_to_image(rgb, "rgb8"), stamp, "camera_color_optical_frame")))
        depth_mm = np.round(sequence.depths[k] * 1000).astype(np.uint16)
        depth.append((stamp + 9_000_000, _header(numpy_to_image(depth_mm, "16UC1"), stamp, "camera_color_optical_frame")))
        camera_info = _header(CameraInfo(), stamp, "camera_color_optical_frame")
        camera_info.width, camera_info.height = width, height
        f = float(sequence.focal_px)
        camera_info.k = [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
        info.append((stamp + 5_000_000, camera_info))
    topics = {"/camera/color/image_raw": colour, "/camera/aligned_depth_to_color/image_raw": depth,
              "/camera/color/camera_info": info, **tf_topics(len(sequence))}
    return write_bag(tmp_path_factory.mktemp("bags") / "recorded", "mcap", topics), topics


# The robot drives along odom's x at 1 m/s; the camera is mounted 0.3 m up base_link, looking
# down (optical z = -base z). /tf at 20 Hz, stamped between the frames (the lookup interpolates).
DRIVE_M_PER_S, TF_OFFSET_NS, TF_PERIOD_NS = 1.0, 25_000_000, 50_000_000
CAMERA_IN_BASE = ((0.0, 0.0, 0.3), (0.0, 1.0, 0.0, 0.0))  # translation, quaternion w x y z: 180 deg about x


def tf_topics(frames: int) -> dict:
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    def stamped(stamp_ns, parent, child, translation, wxyz):
        t = _header(TransformStamped(), stamp_ns, parent)
        t.child_frame_id = child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = translation
        t.transform.rotation.w, t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z = wxyz
        return t

    static = [(START_NS, TFMessage(transforms=[stamped(START_NS, "base_link", "camera_color_optical_frame",
                                                       *CAMERA_IN_BASE)]))]
    moving = []
    for j in range(-1, 2 * frames + 1):
        stamp = START_NS + TF_OFFSET_NS + j * TF_PERIOD_NS
        x = DRIVE_M_PER_S * (stamp - START_NS) / 1e9
        moving.append((max(START_NS, stamp + 1_000_000),
                       TFMessage(transforms=[stamped(stamp, "odom", "base_link", (x, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0))])))
    return {"/tf_static": static, "/tf": moving}


def odom_from_optical(stamp_ns: int):
    from lisa_ros.transforms import Transform

    base = Transform.from_parts((DRIVE_M_PER_S * (stamp_ns - START_NS) / 1e9, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0))
    return base * Transform.from_parts(*CAMERA_IN_BASE)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


@pytest.mark.slow
def test_a_bag_replays_into_an_output_bag_with_one_answer_per_asked_frame(recorded, sequence, tmp_path):
    from lisa_ros.engine import LisaEngine
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions
    from lisa_ros.msg import SegmentationResult
    from lisa_ros.ros.replay import ReplayOptions, replay

    path, topics = recorded
    engine = LisaEngine(load_lisa("embedded", LoadOptions(precision="fp32")))
    summary = replay(path, tmp_path / "answers", engine, ReplayOptions(sequence.query, every=EVERY, target_frame="odom"),
                     progress=False)
    asked = list(range(0, len(sequence), EVERY))
    assert summary.frames == len(sequence) and summary.answered == len(asked) and not summary.refused
    assert not summary.transform_errors
    assert summary.topics.depth == "/camera/aligned_depth_to_color/image_raw"

    reader = bags.open_bag(summary.out)
    try:
        found = {c.topic for c in reader.connections}
        assert set(topics) <= found and {"/lisa_ros/result", "/lisa_ros/mask", "/lisa_ros/detections",
                                         "/lisa_ros/markers"} <= found
        assert reader.topics["/camera/color/image_raw"].msgcount == len(sequence)  # the inputs, copied
        results = [(m.log_ns, m.msg) for m in bags.read_messages(reader, ("/lisa_ros/result",))]
        masks = [m.msg for m in bags.read_messages(reader, ("/lisa_ros/mask",))]
    finally:
        reader.close()
    assert len(results) == len(asked) and all(isinstance(r, SegmentationResult) for _, r in results)
    ious = []
    for (log_ns, result), mask, k in zip(results, masks, asked):
        source = topics["/camera/color/image_raw"][k][1]
        assert result.header == source.header and log_ns == START_NS + k * FRAME_NS  # stamped with its source frame
        assert mask.header == source.header
        ious.append(_iou(image_to_numpy(mask) > 0, sequence.target_masks[k]))
        if result.objects:  # 3D from the registered depth, in the colour frame, and in odom from the bag's TF
            assert result.objects[0].valid_points > 0 and not result.no_3d
            assert result.camera_info.header == source.header  # the frame's own calibration, not the latest
            assert result.target_frame == "odom" and not result.no_target_pose
            for obj in result.objects:
                p, q = obj.pose.pose.position, obj.target_pose.pose.position
                expected = odom_from_optical(START_NS + k * FRAME_NS).apply(np.array([[p.x, p.y, p.z]]))[0]
                assert obj.target_pose.header.frame_id == "odom"
                assert np.allclose([q.x, q.y, q.z], expected, atol=1e-6), (k, [q.x, q.y, q.z], expected)
    print("replay IoUs per answered frame:", [round(v, 3) for v in ious])
    assert np.mean(ious) >= MASK_IOU_FLOOR, ious

    again = replay(path, tmp_path / "at", engine, ReplayOptions(sequence.query, at=[5.35, 5.6], start=0.2,
                                                                copy_inputs=False, storage="sqlite3",
                                                                target_frame="odom"), progress=False)
    assert not again.transform_errors  # /tf_static, logged before the window, still read
    reader = bags.open_bag(again.out)
    try:
        assert {c.topic for c in reader.connections} & set(topics) == set()
        stamps = [m.msg.header.stamp.nanosec for m in bags.read_messages(reader, ("/lisa_ros/result",))]
    finally:
        reader.close()
    assert stamps == [400_000_000, 600_000_000]  # the first frames at or after 5.35 s and 5.6 s
    assert again.frames == len(sequence) - 2  # the window starts 0.2 s after the bag's start


@pytest.mark.slow
def test_a_replay_scored_against_annotations_answers_the_annotated_frames(recorded, sequence, tmp_path, capsys):
    """``lisa-ros replay --annotations``: PNG masks named by stamp for frames 0, 3 and 6 and one
    stamp the bag does not hold; only the annotated frames are answered, and the score is the
    IoU of the masks the output bag holds against the ground truth."""
    import json

    import cv2

    from lisa_ros.cli import main

    path, topics = recorded
    masks = tmp_path / "masks"
    masks.mkdir()
    for k in (0, 3, 6):
        stamp = START_NS + k * FRAME_NS
        cv2.imwrite(str(masks / f"{stamp // 10**9}.{stamp % 10**9:09d}.png"), sequence.target_masks[k].astype(np.uint8) * 255)
    cv2.imwrite(str(masks / "99.000000000.png"), sequence.target_masks[0].astype(np.uint8) * 255)
    out = tmp_path / "answers"
    assert main(["replay", str(path), "--command", sequence.query, "--out", str(out), "--annotations", str(masks),
                 "--precision", "fp32", "--no-progress", "--no-inputs"]) == 0
    printed = capsys.readouterr().out
    assert "annotated frames: 4 (3 answered, 0 refused, 0 not asked, 1 not in the bag)" in printed, printed
    report = json.loads((tmp_path / "answers-score" / "score.json").read_text())
    assert (tmp_path / "answers-score" / "iou.png").is_file()

    reader = bags.open_bag(out)
    try:
        written = [m.msg for m in bags.read_messages(reader, ("/lisa_ros/mask",))]
    finally:
        reader.close()
    assert [m.header.stamp.nanosec for m in written] == [0, 300_000_000, 600_000_000]  # the annotated frames only
    ious = [_iou(image_to_numpy(m) > 0, sequence.target_masks[k]) for m, k in zip(written, (0, 3, 6))]
    scored = [f["iou"] for f in report["frames"] if f["status"] == "answered"]
    assert scored == pytest.approx(ious, abs=1e-3)  # the score is what the output bag shows
    assert report["overall"]["giou"] == pytest.approx(np.mean(ious), abs=1e-3)
    assert report["overall"]["giou"] >= MASK_IOU_FLOOR, ious


# J (mean IoU of the followed objects with the truth, frames 1-9 after the answer on frame 0) on
# this sequence: a floor below what the shipped model and tracker reach (0.87 measured with the
# tenth-run delta, fp32); a track that drifts off or frames out of order give ~0.
TRACK_J_FLOOR = 0.6


@pytest.mark.slow
def test_a_replay_with_track_follows_the_first_answer_on_every_later_frame(recorded, sequence, tmp_path):
    from lisa_ros.engine import LisaEngine
    from lisa_ros.evaluate.annotations import FrameAnnotation
    from lisa_ros.evaluate.recorded import RecordedScore
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions
    from lisa_ros.msg import TrackedObject
    from lisa_ros.ros.replay import ReplayOptions, replay

    path, topics = recorded
    truth = {START_NS + k * FRAME_NS: FrameAnnotation(START_NS + k * FRAME_NS, [mask] if mask.any() else [],
                                                      mask.shape, f"frame {k}")
             for k, mask in enumerate(sequence.target_masks)}
    score = RecordedScore(truth)
    engine = LisaEngine(load_lisa("embedded", LoadOptions(precision="fp32")))
    summary = replay(path, tmp_path / "tracked", engine, ReplayOptions(sequence.query, at=[5.0], track=True,
                                                                       correct_every=3, target_frame="odom"),
                     progress=False, score=score)
    print(summary.text())
    assert summary.answered == 1 and summary.tracked == len(sequence) - 1 and not summary.refused
    reader = bags.open_bag(summary.out)
    try:
        [first] = [m.msg for m in bags.read_messages(reader, ("/lisa_ros/result",))]
        tracks = [(m.log_ns, m.msg) for m in bags.read_messages(reader, ("/lisa_ros/tracks",))]
    finally:
        reader.close()
    assert len(tracks) == len(sequence) - 1
    for k, (log_ns, message) in enumerate(tracks, start=1):
        assert message.header == topics["/camera/color/image_raw"][k][1].header and log_ns == START_NS + k * FRAME_NS
        assert [o.object.id for o in message.objects] == [o.id for o in first.objects]  # the answer's ids, kept
        for tracked in message.objects:
            if tracked.state != TrackedObject.LOST and tracked.object.valid_points:
                assert tracked.object.target_pose.header.frame_id == "odom"  # 3D and TF as for answers
    frames = score.report()["frames"]
    followed = [f["iou"] for f in frames[1:]]
    print("track J per frame:", [round(v, 3) for v in followed])
    assert all(f["status"] == "answered" for f in frames) and np.mean(followed) >= TRACK_J_FLOOR, followed


def test_replay_refuses_bad_input_with_a_clear_error_and_writes_nothing(recorded, tmp_path, capsys):
    from lisa_ros.cli import main

    path, _ = recorded
    cases = [
        ([str(tmp_path / "missing"), "--command", "x", "--out", str(tmp_path / "o1")], "does not exist"),
        ([str(path), "--command", " ", "--out", str(tmp_path / "o2")], "--command is empty"),
        ([str(path), "--command", "x", "--out", str(tmp_path / "o3"), "--every", "0"], "--every must be 1 or more"),
        ([str(path), "--command", "x", "--out", str(path)], "already exists"),
    ]
    for argv, expected in cases:
        assert main(["replay", *argv]) == 2, argv
        assert expected in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    from lisa_ros.ros.replay import ReplayOptions, replay

    with pytest.raises(DataError, match="has no topic /front/image"):
        replay(path, tmp_path / "o4", None, ReplayOptions("x", camera_topic="/front/image"), progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written

    import cv2

    from lisa_ros.evaluate.annotations import read_annotations
    from lisa_ros.evaluate.recorded import RecordedScore

    masks = tmp_path.parent / f"{tmp_path.name}-masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "1700000000.5.png"), np.zeros((8, 8), np.uint8))  # another clock's stamp
    with pytest.raises(DataError, match="none of the 1 annotations .* is for a frame of the bag: its colour frames "
                                        "are stamped 5.000 to 5.900 s"):
        replay(path, tmp_path / "o5", None, ReplayOptions("x"), progress=False,
               score=RecordedScore(read_annotations(masks)))
    assert list(tmp_path.iterdir()) == []
    # before any model work: the bag's colour stamps are read from the raw messages and compared
    assert main(["replay", str(path), "--command", "x", "--out", str(tmp_path / "o5"), "--annotations", str(masks)]) == 2
    assert ("none of the 1 annotations (stamp 1700000000.500 s) is for a frame of the bag: its colour frames are "
            "stamped 5.000 to 5.900 s") in capsys.readouterr().err
    assert main(["replay", str(path), "--command", "x", "--out", str(tmp_path / "o8"), "--track", "--node"]) == 2
    assert "--track replays offline" in capsys.readouterr().err
    assert main(["replay", str(path), "--command", "x", "--out", str(tmp_path / "o6"), "--report", "r"]) == 2
    assert "--report needs --annotations" in capsys.readouterr().err
    assert main(["replay", str(path), "--command", "x", "--out", str(tmp_path / "o7"), "--annotations",
                 str(tmp_path / "none")]) == 2
    assert f"annotations {tmp_path / 'none'} do not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_frames_the_node_would_refuse_are_counted_and_the_replay_goes_on(recorded, tmp_path):
    """A colour frame whose data does not match its size (a driver bug) and a compressed frame cut
    short: each refused with its reason, the others still replayed, the output bag complete.
    (No model: a refused frame never reaches it.)"""
    from lisa_ros.ros.conversions import numpy_to_compressed
    from lisa_ros.ros.replay import ReplayOptions, replay

    _, topics = recorded
    broken = []
    for k, (log_ns, msg) in enumerate(topics["/camera/color/image_raw"][:3]):
        msg = deserialize_copy(msg)
        msg.data = bytes(msg.data)[:-7]  # step x height no longer matches
        broken.append((log_ns, msg))
    path = write_bag(tmp_path / "broken", "mcap", {"/camera/color/image_raw": broken})
    summary = replay(path, tmp_path / "out", None, ReplayOptions("the ball"), progress=False)
    assert summary.answered == 0 and len(summary.refused) == 3
    assert all(reason.startswith("INVALID_IMAGE: ") and "bytes" in reason for _, reason in summary.refused)
    assert summary.out == tmp_path / "out" and (tmp_path / "out" / "metadata.yaml").is_file()

    rgb = np.zeros((48, 64, 3), np.uint8)
    cut = numpy_to_compressed(rgb, "rgb8", "jpeg", broken[0][1].header)
    cut.data = bytes(cut.data)[:40]
    path = write_bag(tmp_path / "cut", "mcap", {"/camera/color/image_raw": [(broken[0][0], cut)]})
    summary = replay(path, tmp_path / "out2", None, ReplayOptions("the ball"), progress=False)
    assert len(summary.refused) == 1 and summary.refused[0][1].startswith("INVALID_IMAGE: ")


def deserialize_copy(msg):
    """An independent copy of an rclpy message (through its bytes)."""
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))
