"""Latest-frame store and depth pairing by stamp (no DDS needed: plain message objects)."""
from __future__ import annotations

import pytest
from sensor_msgs.msg import CameraInfo, Image

from lisa_ros.ros.cameras import CameraInput, RateMeter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def image(sec, nanosec=0, frame="cam"):
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nanosec, frame
    return msg


def test_only_the_latest_colour_frame_is_kept():
    camera = CameraInput("front")
    assert camera.latest() is None and camera.age_s() is None
    for sec in range(50):
        camera.on_color(image(sec))
    assert camera.latest().color.header.stamp.sec == 49 and camera.frames_received == 50


def test_depth_is_paired_by_nearest_stamp_within_the_slop():
    camera = CameraInput("front", depth_slop=0.02)
    camera.on_color(image(10, 500_000_000))
    camera.on_depth(image(10, 470_000_000))  # 30 ms early: outside the slop
    assert camera.latest().depth is None
    camera.on_depth(image(10, 515_000_000))  # 15 ms late
    camera.on_depth(image(10, 495_000_000))  # 5 ms early: nearest
    frame = camera.latest()
    assert frame.depth.header.stamp.nanosec == 495_000_000
    assert abs(frame.depth_offset_s + 0.005) < 1e-9
    camera.on_camera_info(CameraInfo(width=640, height=480))
    assert camera.latest().camera_info.width == 640


def test_depth_arriving_after_colour_is_found_at_request_time():
    camera = CameraInput("front")
    camera.on_color(image(5))
    assert camera.latest().depth is None
    camera.on_depth(image(5))
    assert camera.latest().depth is not None


def test_depth_history_is_bounded():
    camera = CameraInput("front", depth_history=3)
    for sec in range(10):
        camera.on_depth(image(sec))
    camera.on_color(image(2))
    assert camera.latest().depth is None  # stamp 2 fell out of the history
    camera.on_color(image(8))
    assert camera.latest().depth.header.stamp.sec == 8


def test_age_and_rate():
    clock = Clock()  # arrivals (monotonic)
    stamps = Clock()  # the node's clock, in which frames are stamped
    camera = CameraInput("front", clock=clock, stamp_clock=stamps)
    for index in range(31):
        clock.now = stamps.now = 100.0 + index / 30
        camera.on_color(image(100 + index // 30, int(round((index % 30) / 30 * 1e9))))
    clock.now += 0.5
    stamps.now += 0.5
    assert abs(camera.age_s() - 0.5) < 1e-6
    assert abs(camera.color_rate.rate_hz(clock.now) - 30.0) < 1e-6
    assert camera.color_rate.rate_hz(clock.now + 10) == 0.0  # stale stream
    assert RateMeter().rate_hz(0.0) == 0.0


def test_callback_latency_is_measured_against_the_stamp():
    wall = {"now": 1000.25}
    camera = CameraInput("front", stamp_clock=lambda: wall["now"])
    assert camera.callback_latency.summary_ms() == {"mean": 0.0, "p99": 0.0, "max": 0.0}
    for delay_ms in (10, 20, 30):
        frame = image(1000, 0)
        wall["now"] = 1000.0 + delay_ms / 1000
        camera.on_color(frame)
    summary = camera.callback_latency.summary_ms()
    assert abs(summary["mean"] - 20.0) < 1e-6 and abs(summary["max"] - 30.0) < 1e-6


def test_repeated_stamps_still_give_distinct_frames():
    camera = CameraInput("front")
    camera.on_color(image(0))  # a driver that stamps 0
    first = camera.latest()
    camera.on_color(image(0))
    second = camera.latest()
    assert first.sequence != second.sequence and second.color is not first.color


def test_the_newest_colour_frame_with_matching_depth_is_chosen():
    camera = CameraInput("front", depth_slop=0.01)
    for sec in (1, 2, 3):
        camera.on_color(image(sec))
    camera.on_depth(image(2))  # depth of frame 3 has not arrived yet
    frame = camera.latest()
    assert frame.color.header.stamp.sec == 2 and frame.depth is not None
    camera.on_depth(image(3))
    assert camera.latest().color.header.stamp.sec == 3


def test_frame_age_is_from_the_stamp_in_the_node_clock_and_from_arrival_when_unstamped():
    """Under sim time the node clock (/clock) can jump while no wall time passes: the age follows
    the stamps. A bag replayed with old stamps is old; a frame stamped 0 is aged by arrival."""
    arrival, node_clock = Clock(), Clock()
    camera = CameraInput("front", clock=arrival, stamp_clock=node_clock)
    node_clock.now = 1000.0
    camera.on_color(image(1000, 0))
    node_clock.now = 1010.0  # sim time advanced 10 s, (almost) no wall time passed
    frame = camera.latest()
    assert camera.frame_age_s(frame) == 10.0 and camera.age_s() == 10.0
    node_clock.now = 999.5  # the clock jumped back: not negative
    assert camera.age_s() == 0.0
    node_clock.now = 1000.0
    camera.on_color(image(0, 0))  # a driver that does not stamp
    node_clock.now += 2.5
    assert camera.age_s() == 2.5


@pytest.mark.parametrize("ahead_s", [0.6, 2.0, 30.0, 3600.0, 86400.0 * 365])
def test_a_frame_stamped_ahead_of_the_node_clock_ages_from_its_arrival(ahead_s):
    """A camera stamping ahead (a wrong clock, device time, wall time under use_sim_time) and
    then stopping: its last frame goes stale like any other, min_stamp comparisons use when it
    arrived, and the clock problem is named."""
    arrival, node_clock = Clock(), Clock()
    camera = CameraInput("front", clock=arrival, stamp_clock=node_clock)
    node_clock.now = 1000.0
    camera.on_color(image(int(1000 + ahead_s), int(round(ahead_s % 1 * 1e9))))
    frame = camera.latest()
    assert frame.taken_s == 1000.0  # held to its arrival, not its stamp
    node_clock.now = 1003.0  # the camera stopped 3 s ago
    assert camera.frame_age_s(frame) == 3.0 and camera.age_s() == 3.0
    problem = camera.clock_problem()
    assert f"{ahead_s:.1f} s ahead of this node's clock" in problem and "synchronise" in problem


@pytest.mark.parametrize("offset_s", [-0.4, -0.05, 0.0, 0.3, 0.9])
def test_stamps_within_transport_latency_and_clock_sync_are_no_clock_problem(offset_s):
    """offset_s: node clock at arrival minus stamp (negative: stamped slightly ahead)."""
    node_clock = Clock()
    camera = CameraInput("front", stamp_clock=node_clock)
    node_clock.now = 1000.0
    stamp = 1000.0 - offset_s
    camera.on_color(image(int(stamp), int(round((stamp % 1) * 1e9))))
    assert camera.clock_problem() == ""
    assert abs(camera.latest().taken_s - min(stamp, 1000.0)) < 1e-6


@pytest.mark.parametrize("behind_s", [1.5, 30.0, 3600.0])
def test_a_camera_stamping_behind_the_node_clock_is_named_as_such(behind_s):
    """Old by its stamp but just arrived: the camera's clock is not the node's (no NTP, device
    time stamps, a bag without use_sim_time); the reason says so instead of a bare 'stale'."""
    node_clock = Clock()
    camera = CameraInput("front", stamp_clock=node_clock)
    node_clock.now = 1000.0 + behind_s
    camera.on_color(image(1000, 0))
    problem = camera.clock_problem()
    assert f"{behind_s:.1f} s behind this node's clock" in problem and "synchronise" in problem
    assert camera.age_s() == behind_s
    camera.on_color(image(int(node_clock.now), 0))  # in step with the node's clock: no problem
    assert camera.clock_problem() == ""


@pytest.mark.parametrize("back_s", [2.0, 996.0])
def test_frames_from_before_the_clock_went_back_are_never_fresh(back_s):
    """A bag or simulation restarted: sim time jumps back. The last frame of the old time line
    must not become fresh again (age 0 until the clock catches up) for a camera that stopped."""
    node_clock = Clock()
    camera = CameraInput("front", stamp_clock=node_clock)
    node_clock.now = 1000.0
    camera.on_color(image(1000, 0))
    node_clock.now = 1000.0 - back_s
    assert camera.age_s() == float("inf")
    assert f"went back {back_s:.1f} s" in camera.clock_problem()
    camera.on_color(image(int(node_clock.now), 0))  # the first frame of the new time line
    assert camera.age_s() == 0.0 and camera.clock_problem() == ""
