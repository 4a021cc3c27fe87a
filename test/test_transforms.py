"""The TF buffer used without tf2_ros (lisa_ros.transforms), checked against hand computations,
and the tf2_msgs/TFMessage interface the build provides when ROS 2's is absent."""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lisa_ros.transforms import Transform, TransformBuffer, TransformError


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def quat_z(angle: float) -> tuple[float, float, float, float]:
    """(w, x, y, z) of a rotation by ``angle`` about z."""
    return (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))


def quat_x(angle: float) -> tuple[float, float, float, float]:
    return (math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0)


def homogeneous(rotation: np.ndarray, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, translation
    return matrix


def robot_tree(buffer: TransformBuffer) -> None:
    """odom -> base_link (moving: x from 0 to 1 m and yaw 0 to 90 deg between t=10 and t=12 s);
    base_link -> camera_link (static: 0.2 m forward, 1.0 m up, pitched down 30 deg about x);
    camera_link -> camera_optical (static: REP 103 optical rotation, a quarter turn twice)."""
    buffer.set_transform("odom", "base_link", 10.0, Transform.from_parts((0, 0, 0), quat_z(0.0)))
    buffer.set_transform("odom", "base_link", 12.0, Transform.from_parts((1, 0, 0), quat_z(math.pi / 2)))
    buffer.set_transform("base_link", "camera_link", 0.0, Transform.from_parts((0.2, 0, 1.0), quat_x(-math.pi / 6)),
                         static=True)
    # optical: z forward (= link x), x right (= link -y), y down (= link -z)
    optical = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    import transforms3d.quaternions as quaternions

    buffer.set_transform("camera_link", "camera_optical", 0.0,
                         Transform.from_parts((0.0, 0.0, 0.0), quaternions.mat2quat(optical)), static=True)


def hand_odom_from_optical(t: float) -> np.ndarray:
    fraction = (t - 10.0) / 2.0
    odom_base = homogeneous(rot_z(fraction * math.pi / 2), (fraction, 0.0, 0.0))  # slerp about one axis = linear angle
    base_camera = homogeneous(rot_x(-math.pi / 6), (0.2, 0.0, 1.0))
    camera_optical = homogeneous(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), (0, 0, 0))
    return odom_base @ base_camera @ camera_optical


def test_a_point_seen_by_the_camera_maps_to_the_hand_computed_odom_point_at_any_time():
    buffer = TransformBuffer()
    robot_tree(buffer)
    point_optical = np.array([0.1, -0.2, 2.0])
    for t in (10.0, 10.5, 11.0, 11.73, 12.0):
        expected = (hand_odom_from_optical(t) @ np.append(point_optical, 1.0))[:3]
        got = buffer.lookup_transform("odom", "camera_optical", t).apply(point_optical)
        np.testing.assert_allclose(got, expected, atol=1e-3)  # the bound: 1 mm
        np.testing.assert_allclose(got, expected, atol=1e-9)  # what it is: exact to rounding
    # The inverse direction.
    back = buffer.lookup_transform("camera_optical", "odom", 11.0).apply(
        (hand_odom_from_optical(11.0) @ np.append(point_optical, 1.0))[:3])
    np.testing.assert_allclose(back, point_optical, atol=1e-9)
    np.testing.assert_allclose(buffer.lookup_transform("base_link", "camera_optical", 11.0).apply(np.zeros(3)),
                               [0.2, 0.0, 1.0], atol=1e-12)


def test_time_zero_is_the_latest_and_orientation_composes():
    buffer = TransformBuffer()
    robot_tree(buffer)
    latest = buffer.lookup_transform("odom", "camera_optical", 0.0)
    np.testing.assert_allclose(latest.matrix, hand_odom_from_optical(12.0)[:3, :3], atol=1e-9)
    identity = (1.0, 0.0, 0.0, 0.0)
    import transforms3d.quaternions as quaternions

    np.testing.assert_allclose(quaternions.quat2mat(latest.rotate(np.array(identity))), latest.matrix, atol=1e-9)


@pytest.mark.parametrize("stamp, words", [(9.0, "past"), (12.5, "future")])
def test_no_extrapolation(stamp, words):
    buffer = TransformBuffer()
    robot_tree(buffer)
    with pytest.raises(TransformError, match=words):
        buffer.lookup_transform("odom", "camera_optical", stamp)
    # static edges alone hold at every time
    assert buffer.lookup_transform("base_link", "camera_optical", stamp) is not None


def test_unknown_and_unconnected_frames_and_bad_input():
    buffer = TransformBuffer()
    robot_tree(buffer)
    buffer.set_transform("map", "elsewhere", 0.0, Transform.identity(), static=True)
    with pytest.raises(TransformError, match="does not exist"):
        buffer.lookup_transform("odom", "gripper", 11.0)
    with pytest.raises(TransformError, match="not connected"):
        buffer.lookup_transform("map", "camera_optical", 11.0)
    with pytest.raises(ValueError):
        buffer.set_transform("a", "a", 0.0, Transform.identity())
    with pytest.raises(ValueError):
        Transform.from_parts((0, 0, math.nan), (1, 0, 0, 0))
    with pytest.raises(ValueError):
        Transform.from_parts((0, 0, 0), (0, 0, 0, 0))
    assert buffer.lookup_transform("/odom", "odom", 3.0).apply(np.ones(3)).tolist() == [1.0, 1.0, 1.0]


def test_old_samples_leave_the_cache_and_a_reparented_frame_moves():
    buffer = TransformBuffer(cache_time_s=1.0)
    for t in range(10):
        buffer.set_transform("odom", "base_link", float(t), Transform.from_parts((t, 0, 0), (1, 0, 0, 0)))
    with pytest.raises(TransformError, match="past"):
        buffer.lookup_transform("odom", "base_link", 5.5)
    np.testing.assert_allclose(buffer.lookup_transform("odom", "base_link", 8.5).translation, [8.5, 0, 0])
    buffer.set_transform("map", "base_link", 10.0, Transform.from_parts((0, 2, 0), (1, 0, 0, 0)))
    np.testing.assert_allclose(buffer.lookup_transform("map", "base_link", 0.0).translation, [0, 2, 0])


def test_waiting_for_a_transform_returns_once_it_arrives_and_gives_up_after_the_timeout():
    buffer = TransformBuffer()
    with pytest.raises(TransformError):
        buffer.wait_for_transform("base_link", "camera", 1.0, 0.05)
    threading.Timer(0.2, lambda: buffer.set_transform("base_link", "camera", 0.0, Transform.identity(), static=True)).start()
    started = time.monotonic()
    buffer.wait_for_transform("base_link", "camera", 1.0, 10.0)
    assert time.monotonic() - started < 5.0


@pytest.mark.rosidl
def test_the_tf2_msgs_interface_has_ros2s_type_hash():
    """The TFMessage this build provides (or the system's) hashes like ROS 2's tf2_msgs: its type
    description hash equals the one rosbags computes from its own copy of the ROS 2 definitions."""
    import tf2_msgs
    from rosbags.typesys import Stores, get_typestore

    share = Path(tf2_msgs.__file__).resolve().parents[4] / "share" / "tf2_msgs" / "msg" / "TFMessage.json"
    hashes = {h["type_name"]: h["hash_string"] for h in json.loads(share.read_text())["type_hashes"]}
    reference = get_typestore(Stores.ROS2_KILTED).hash_rihs01("tf2_msgs/msg/TFMessage")
    assert hashes["tf2_msgs/msg/TFMessage"] == reference


def test_a_lookup_between_two_branches_goes_through_their_common_ancestor():
    """gripper and camera both hang off base_link: camera_from_gripper = camera_from_base * base_from_gripper."""
    buffer = TransformBuffer()
    buffer.set_transform("base_link", "camera", 0.0, Transform.from_parts((0.1, 0.0, 1.0), quat_z(math.pi / 2)), static=True)
    buffer.set_transform("base_link", "gripper", 0.0, Transform.from_parts((0.5, 0.2, 0.3), quat_x(0.4)), static=True)
    expected = np.linalg.inv(homogeneous(rot_z(math.pi / 2), (0.1, 0.0, 1.0))) @ homogeneous(rot_x(0.4), (0.5, 0.2, 0.3))
    got = buffer.lookup_transform("camera", "gripper", 0.0)
    np.testing.assert_allclose(got.matrix, expected[:3, :3], atol=1e-12)
    np.testing.assert_allclose(got.translation, expected[:3, 3], atol=1e-12)


def test_interpolation_takes_the_short_way_round_when_quaternion_signs_differ():
    """Yaw 170 deg to yaw -170 deg (stored as a quaternion of opposite sign): halfway is 180 deg,
    not 0 deg (the long way round)."""
    buffer = TransformBuffer()
    q1 = np.array(quat_z(math.radians(170)))
    q2 = -np.array(quat_z(math.radians(-170)))  # the same rotation, the other sign
    buffer.set_transform("odom", "base_link", 1.0, Transform.from_parts((0, 0, 0), q1))
    buffer.set_transform("odom", "base_link", 2.0, Transform.from_parts((0, 0, 0), q2))
    np.testing.assert_allclose(buffer.lookup_transform("odom", "base_link", 1.5).matrix, rot_z(math.pi), atol=1e-9)


def test_time_zero_is_the_latest_time_every_edge_has():
    """a -> b has samples at 1 and 2 s, b -> c only at 1 s: "latest" is 1 s for a lookup through
    both (tf2's rule), not each edge's own newest sample."""
    buffer = TransformBuffer()
    buffer.set_transform("a", "b", 1.0, Transform.from_parts((0, 0, 0), (1, 0, 0, 0)))
    buffer.set_transform("a", "b", 2.0, Transform.from_parts((1, 0, 0), (1, 0, 0, 0)))
    buffer.set_transform("b", "c", 1.0, Transform.from_parts((0, 0, 0), (1, 0, 0, 0)))
    np.testing.assert_allclose(buffer.lookup_transform("a", "c", 0.0).translation, [0, 0, 0])
    np.testing.assert_allclose(buffer.lookup_transform("a", "b", 0.0).translation, [1, 0, 0])


@pytest.mark.parametrize("cache_time_s", [10.0, 301.0])
def test_time_jumping_back_restarts_an_edge_instead_of_refusing_every_new_sample(cache_time_s):
    """A looped bag or a reset simulator: samples at 100-109 s, then 0-4 s. The new run's samples
    are used (tf2 clears its buffer on a jump back), also when the history kept is longer than the
    jump (the node keeps minutes: samples of two runs must not be interpolated together)."""
    buffer = TransformBuffer(cache_time_s=cache_time_s)
    for t in range(100, 110):
        buffer.set_transform("odom", "base_link", float(t), Transform.from_parts((t, 0, 0), (1, 0, 0, 0)))
    for t in range(5):
        buffer.set_transform("odom", "base_link", float(t), Transform.from_parts((t, 0, 0), (1, 0, 0, 0)))
    np.testing.assert_allclose(buffer.lookup_transform("odom", "base_link", 2.5).translation, [2.5, 0, 0])
    with pytest.raises(TransformError):
        buffer.lookup_transform("odom", "base_link", 105.0)


def test_old_samples_are_dropped_in_batches_and_the_history_stays_bounded():
    """At 100 Hz with 2 s of history, after 60 s the edge holds between 2 s and 2 s plus a third of
    it (dropped a quarter at a time, not one per message), and lookups inside the history work."""
    buffer = TransformBuffer(cache_time_s=2.0)
    sizes = []
    for i in range(6000):
        buffer.set_transform("odom", "base_link", i / 100, Transform.from_parts((i / 100, 0, 0), (1, 0, 0, 0)))
        sizes.append(len(buffer._moving["base_link"].stamps))
    assert 200 <= min(sizes[300:]) and max(sizes) <= 268
    assert len(set(sizes[300:])) > 10  # it grows between batches
    np.testing.assert_allclose(buffer.lookup_transform("odom", "base_link", 58.255).translation, [58.255, 0, 0])
    with pytest.raises(TransformError, match="past"):
        buffer.lookup_transform("odom", "base_link", 50.0)
