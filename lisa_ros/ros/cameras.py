"""Camera inputs: the latest frame per camera, depth paired with colour by stamp.

Image callbacks only call ``on_color``/``on_depth``/``on_camera_info``: they store a reference and
return (no conversion, no model work), so they keep up at camera rate while inference runs on
the worker. Only the newest colour frame is kept (never a growing queue); depth keeps a short
history so that the depth frame with the colour frame's stamp can be found when a request comes
(message_filters is not installable from PyPI; this is the small equivalent the node needs).
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


# A stamp this far ahead of the node's clock when its frame arrives, or this far behind it, is named
# as a clock problem (seconds): more than clock synchronisation (ms) and transport latency explain.
STAMP_AHEAD_TOLERANCE_S = 0.5
STAMP_BEHIND_TOLERANCE_S = 1.0
# The node's clock this far behind a frame's arrival means it went back (seconds).
CLOCK_BACK_TOLERANCE_S = 0.5


def time_seconds(stamp) -> float:
    """builtin_interfaces/Time (or Duration: the same fields) -> seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_seconds(header) -> float:
    """A std_msgs/Header's stamp in seconds."""
    return time_seconds(header.stamp)


def stamp_ns(header) -> int:
    """A std_msgs/Header's stamp in nanoseconds (exact, as bags log times)."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def time_from_ns(nanoseconds: int):
    """builtin_interfaces/Time of ``nanoseconds`` (>= 0)."""
    from builtin_interfaces.msg import Time

    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


@dataclass
class CameraFrame:
    """A colour frame (Image or CompressedImage) with the depth and camera_info paired to it."""

    camera: str
    color: Any
    depth: Any | None
    camera_info: Any | None
    received_at: float  # monotonic clock of this process
    depth_offset_s: float | None  # depth stamp - colour stamp, None without depth
    sequence: int = 0  # arrival number of the colour frame (unique even when stamps repeat)
    arrived_s: float = 0.0  # the node's clock (ROS time: sim time under use_sim_time) when it arrived

    @property
    def taken_s(self) -> float:
        """When the picture was taken at the latest, in the node's clock (seconds): its stamp, but
        never after it arrived (a picture cannot be taken after it arrives, so a camera stamping
        ahead of this node's clock, or in another clock, is held to its arrival); a frame stamped
        0 (some drivers) is taken when it arrived."""
        stamp = stamp_seconds(self.color.header)
        return self.arrived_s if stamp == 0.0 else min(stamp, self.arrived_s)

    @property
    def cache_key(self) -> tuple[str, int]:
        """The frame cache key: camera name and arrival number. Not the stamp: drivers that stamp
        0 or a looping bag repeat stamps, and a cache keyed on them would answer about an older image."""
        return (self.camera, self.sequence)


class RateMeter:
    """Messages per second over the last ``window`` arrivals."""

    def __init__(self, window: int = 30):
        self._times: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()  # image callbacks tick while diagnostics read

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)

    def _snapshot(self) -> list[float]:
        with self._lock:
            return list(self._times)

    def rate_hz(self, now: float, stale_after_s: float = 5.0) -> float:
        times = self._snapshot()
        if len(times) < 2 or now - times[-1] > stale_after_s:
            return 0.0
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0

    def jitter_ms(self) -> float:
        """Standard deviation of the intervals between the last ``window`` arrivals (ms); 0
        with fewer than three arrivals."""
        times = self._snapshot()
        return float(1e3 * np.diff(times).std()) if len(times) >= 3 else 0.0


class LatencyMeter:
    """Delay between a frame's stamp and its callback (in the node's clock: sim time under
    use_sim_time), over the last ``window`` frames: how late image callbacks run, e.g. during
    inference."""

    def __init__(self, window: int = 300):
        self._values: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def summary_ms(self) -> dict[str, float]:
        values = sorted(self._values)
        if not values:
            return {"mean": 0.0, "p99": 0.0, "max": 0.0}
        return {"mean": 1e3 * sum(values) / len(values),
                "p99": 1e3 * values[min(len(values) - 1, int(0.99 * len(values)))], "max": 1e3 * values[-1]}


class CameraInput:
    """One named camera: latest colour frame, recent depth frames, latest camera_info.

    ``depth_slop``: seconds, the largest |depth stamp - colour stamp| accepted as a pair (the
    ``<camera>.depth_slop`` parameter); ``depth_scale``: metres per 16UC1 unit; ``rectified``:
    the image is rectified, so 3D uses CameraInfo's P instead of K; ``expected_rate_hz``: the
    colour rate diagnostics hold it to (0 = not checked); ``check_depth_frame``: depth whose
    frame_id is not the colour image's is not registered to it and is ignored. ``clock``:
    monotonic seconds (arrival times, rates); ``stamp_clock``: seconds in the clock the stamps
    are in, the node's ROS clock (``node.get_clock()``: sim time under use_sim_time); both
    injectable for tests.

    A frame's age (:meth:`frame_age_s`) is the stamp clock's now minus when the picture was
    taken (:attr:`CameraFrame.taken_s`: its header stamp, but no later than its arrival), so it
    means "how old is the picture", also under sim time, and a camera that stops goes stale even
    when it stamped ahead of this node's clock.
    """

    def __init__(self, name: str, depth_slop: float = 0.02, depth_history: int = 10, color_history: int = 3,
                 clock: Callable[[], float] = time.monotonic, stamp_clock: Callable[[], float] = time.time,
                 depth_scale: float = 0.001, rectified: bool = False, expected_rate_hz: float = 0.0,
                 check_depth_frame: bool = True):
        self.name = name
        self.check_depth_frame = check_depth_frame  # depth of another frame_id than colour is ignored
        self.expected_rate_hz = expected_rate_hz  # 0 = not checked
        self.depth_scale = depth_scale  # metres per 16UC1 unit
        self.rectified = rectified  # the image is rectified: intrinsics from CameraInfo's P
        self._stamp_clock = stamp_clock
        self.callback_latency = LatencyMeter()
        self.depth_slop = depth_slop
        self._clock = clock
        self._lock = threading.Lock()
        # The newest few colour frames: the newest that has a matching depth frame is used, so
        # depth arriving a little after colour still pairs.
        self._colors: deque[tuple[Any, float, int, float]] = deque(maxlen=color_history)
        self._depth: deque[Any] = deque(maxlen=depth_history)
        self._camera_info: Any | None = None
        self._pinned_for: Any | None = None  # the colour message whose depth is kept (pin_depth)
        self._pinned: Any | None = None
        self.color_rate = RateMeter()
        self.depth_rate = RateMeter()
        self.frames_received = 0
        # Set by the request handler: why the last request could not use this camera's depth or
        # camera_info (not registered to colour, another camera's), "" when it could; a WARN.
        self.input_problem = ""
        self.frame_id = ""  # of the latest colour frame: the camera's identity in diagnostics
        # Set by the node once subscribed: what the ROS graph says about a silent colour topic.
        self.describe_silence: Callable[[], str] | None = None
        self._listeners: list[Callable[[CameraFrame], None]] = []  # add_listener

    @classmethod
    def from_config(cls, config, stamp_clock: Callable[[], float]) -> "CameraInput":
        """The input of one camera as the node's parameters describe it
        (:class:`lisa_ros.ros.parameters.CameraConfig`); ``stamp_clock``: the node's clock in seconds."""
        return cls(config.name, config.depth_slop, depth_scale=config.depth_scale, rectified=config.rectified,
                   expected_rate_hz=config.expected_rate, stamp_clock=stamp_clock,
                   check_depth_frame=config.check_depth_frame)

    def on_color(self, msg: Any) -> None:
        now, arrived_s = self._clock(), self._stamp_clock()
        latency = arrived_s - stamp_seconds(msg.header)
        with self._lock:
            self.frames_received += 1
            self._colors.append((msg, now, self.frames_received, arrived_s))
            self.frame_id = msg.header.frame_id
            self.color_rate.tick(now)
            self.callback_latency.add(latency)
            listeners, sequence = list(self._listeners), self.frames_received
        if listeners:
            frame = CameraFrame(self.name, msg, None, None, now, None, sequence, arrived_s)
            for listener in listeners:
                listener(frame)

    def add_listener(self, listener: Callable[[CameraFrame], None]) -> None:
        """Call ``listener(frame)`` with every colour frame from now on (on the subscription's
        thread: it must only hand the frame over; the frame has no depth or camera_info yet:
        :meth:`paired` adds them)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[CameraFrame], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def on_depth(self, msg: Any) -> None:
        with self._lock:
            self._depth.append(msg)
            self.depth_rate.tick(self._clock())
            if self._pinned_for is not None:  # keep the best match for the pinned colour frame
                best, _ = self._nearest_depth(self._pinned_for, [d for d in (self._pinned, msg) if d is not None])
                self._pinned = best

    def pin_depth(self, frame: CameraFrame | None) -> None:
        """Keep the depth frame nearest ``frame``'s stamp (within the slop) as it arrives, beyond
        the depth history, until the next call (None: stop). For a frame that is worked on longer
        than the history spans (encoded ahead: ~1 s, while 10 depth frames span 0.33 s at 30 Hz):
        :meth:`paired` finds its depth however late it is asked."""
        with self._lock:
            self._pinned_for = frame.color if frame is not None else None
            self._pinned = None
            if frame is not None:
                self._pinned, _ = self._nearest_depth(frame.color, list(self._depth))

    def on_camera_info(self, msg: Any) -> None:
        with self._lock:
            self._camera_info = msg

    def _nearest_depth(self, color: Any, depths: list[Any]) -> tuple[Any | None, float | None]:
        target = stamp_seconds(color.header)
        best, best_offset = None, None
        for depth in depths:
            offset = stamp_seconds(depth.header) - target
            if abs(offset) <= self.depth_slop and (best is None or abs(offset) < abs(best_offset)):
                best, best_offset = depth, offset
        return best, best_offset

    def latest(self) -> CameraFrame | None:
        """The newest colour frame that has a depth frame within the slop, else the newest colour
        frame without depth; None before the first frame."""
        with self._lock:
            if not self._colors:
                return None
            colors = list(self._colors)
            depths = list(self._depth)
            info = self._camera_info
        for color, received_at, sequence, arrived_s in reversed(colors):
            depth, offset = self._nearest_depth(color, depths)
            if depth is not None:
                return CameraFrame(self.name, color, depth, info, received_at, offset, sequence, arrived_s)
        color, received_at, sequence, arrived_s = colors[-1]
        return CameraFrame(self.name, color, None, info, received_at, None, sequence, arrived_s)

    def paired(self, frame: CameraFrame) -> CameraFrame:
        """``frame`` with the depth frame nearest its stamp now (depth may arrive after colour;
        none when none is within the slop; a depth frame pinned for it counts, :meth:`pin_depth`)
        and the latest camera_info."""
        with self._lock:
            depths = list(self._depth)
            if self._pinned is not None and self._pinned_for is frame.color:
                depths.append(self._pinned)
            info = self._camera_info
        depth, offset = self._nearest_depth(frame.color, depths)
        return dataclasses.replace(frame, depth=depth, camera_info=info, depth_offset_s=offset)

    def now(self) -> float:
        """This input's arrival clock now (monotonic seconds: :attr:`CameraFrame.received_at`)."""
        return self._clock()

    def frame_age_s(self, frame: CameraFrame) -> float:
        """Seconds since ``frame``'s picture was taken, in the node's clock: now minus
        :attr:`CameraFrame.taken_s` (its stamp, but no later than its arrival); never negative.
        Infinite for a frame that arrived before the node's clock went back (more than
        :data:`CLOCK_BACK_TOLERANCE_S`: a bag or simulation restarted): it belongs to the old
        time line and is never fresh again."""
        now = self._stamp_clock()
        if frame.arrived_s - now > CLOCK_BACK_TOLERANCE_S:
            return math.inf
        return max(0.0, now - frame.taken_s)

    def age_s(self) -> float | None:
        """Age of the latest colour frame (:meth:`frame_age_s`; None before the first one)."""
        frame = self.newest()
        return None if frame is None else self.frame_age_s(frame)

    def newest(self) -> CameraFrame | None:
        """The newest colour frame as it arrived (no depth paired), None before the first."""
        with self._lock:
            if not self._colors:
                return None
            color, received_at, sequence, arrived_s = self._colors[-1]
        return CameraFrame(self.name, color, None, None, received_at, None, sequence, arrived_s)

    def clock_problem(self, frame: CameraFrame | None = None) -> str:
        """A sentence naming a clock problem of ``frame`` (default: the newest), "" when none: its
        stamp ahead of this node's clock when it arrived (more than :data:`STAMP_AHEAD_TOLERANCE_S`),
        or more than :data:`STAMP_BEHIND_TOLERANCE_S` behind it although it had just arrived. The
        camera then stamps in another clock than this node's (no time synchronisation, device time
        stamps, a bag played without use_sim_time, or use_sim_time with a camera in wall time)."""
        frame = frame if frame is not None else self.newest()
        if frame is None:
            return ""
        back = frame.arrived_s - self._stamp_clock()
        if back > CLOCK_BACK_TOLERANCE_S:
            return (f"this node's clock went back {back:.1f} s since the frame arrived (a bag or simulation "
                    "restarted): frames from before are not used")
        if not stamp_seconds(frame.color.header):
            return ""
        lag = frame.arrived_s - stamp_seconds(frame.color.header)
        if -lag > STAMP_AHEAD_TOLERANCE_S:
            where = f"{-lag:.1f} s ahead of"
        elif lag > STAMP_BEHIND_TOLERANCE_S:
            where = f"{lag:.1f} s behind"
        else:
            return ""
        return (f"the camera's stamps are {where} this node's clock when its frames arrive (synchronise the "
                "clocks, or use_sim_time for a bag; frame age is taken from arrival when the stamp is ahead)")

    def silence_reason(self) -> str:
        """Why no colour frame may have come (the topic's publishers and their QoS, when the node
        has set :attr:`describe_silence`)."""
        if self.describe_silence is not None:
            return self.describe_silence()
        return "check the topic and QoS (the node subscribes with sensor-data QoS, best effort)"

    def has_depth_stream(self) -> bool:
        with self._lock:
            return bool(self._depth)
