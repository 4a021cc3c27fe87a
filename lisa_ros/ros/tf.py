"""TF lookups for the node's ``target_frame`` outputs: tf2_ros when importable, else our buffer.

With a sourced ROS 2, ``tf2_ros.Buffer`` and ``TransformListener`` do the work. A pip-only install
has no tf2 (it is not on PyPI): then :class:`TfLookup` subscribes to ``/tf`` and ``/tf_static``
(``tf2_msgs/msg/TFMessage``, built by ``make install`` when absent, same type hash as ROS 2's) and
feeds :class:`lisa_ros.transforms.TransformBuffer` (same semantics as tf2: interpolation, no
extrapolation, static edges at every time). The topics are absolute, as tf2's are (remap them for
a namespaced TF tree). The node starts the subscriptions at configure (any request may name a
target frame), so the buffer holds history by the time a request's image needs it.

History: a request looks its transform up when its first object with 3D is ready
(:class:`TargetTransform`), at the image's stamp. That can be as late as the frame's age when the
request started plus the request's whole time budget, so the buffer keeps
:func:`history_seconds` of it (at least tf2's default of 10 s, at most 10 minutes). tf2_ros's
buffer takes the length the parameters give at configure; ours follows them per request.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from lisa_ros.ros.cameras import stamp_seconds, time_seconds
from lisa_ros.transforms import DEFAULT_CACHE_TIME_S, Transform, TransformBuffer, TransformError

# tf2_ros's listener QoS: /tf keep-last 100; /tf_static transient local (latched), keep-last 100.
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


# The most TF history kept (seconds), whatever the limits: 10 minutes of a busy tree (20 moving
# frames at 100 Hz) is about 80 MB in our buffer.
MAX_HISTORY_S = 600.0


def history_seconds(max_frame_age: float, request_timeout: float) -> float:
    """How much TF history a lookup may need (seconds): a camera frame is at most
    ``max_frame_age`` old when its request starts (0 = no limit: then only the request's own
    time), and the lookup happens before the node's ``request_timeout`` ends; never less than
    tf2's default cache (10 s), never more than :data:`MAX_HISTORY_S`. (A request with a longer
    timeout of its own may outlast the history; it looks TF up when its first object is ready,
    seconds after the frame, so it rarely needs more.)"""
    return min(MAX_HISTORY_S, max(DEFAULT_CACHE_TIME_S, max_frame_age + request_timeout))


def transform_from_msg(transform) -> Transform:
    """geometry_msgs/Transform -> Transform (quaternion x, y, z, w -> w, x, y, z). ValueError when
    it is not finite or the quaternion is zero."""
    t, q = transform.translation, transform.rotation
    return Transform.from_parts((t.x, t.y, t.z), (q.w, q.x, q.y, q.z))


def add_tf_message(buffer: TransformBuffer, message, static: bool) -> list[str]:
    """Put a tf2_msgs/TFMessage's transforms into ``buffer``; a bad one (not finite, a zero
    quaternion) is skipped, never the others: returns why, one line per skipped transform."""
    problems = []
    for stamped in message.transforms:
        try:
            buffer.set_transform(stamped.header.frame_id, stamped.child_frame_id, stamp_seconds(stamped.header),
                                 transform_from_msg(stamped.transform), static=static)
        except ValueError as exc:
            problems.append(f"ignored a transform on {'/tf_static' if static else '/tf'}: {exc}")
    return problems


class TfLookup:
    """``lookup(target_frame, source_frame, stamp, timeout_s) -> Transform`` (target_from_source at
    ``stamp``, a builtin_interfaces/Time; zero = latest), waiting up to ``timeout_s`` seconds for
    the transform; raises :class:`TransformError` with tf's reason. ``backend`` says which is used:
    "tf2_ros" or "lisa_ros" (our buffer)."""

    def __init__(self, node, callback_group=None):
        self._node = node
        self._group = callback_group
        self._lock = threading.Lock()
        self._started = False
        self._history_s = DEFAULT_CACHE_TIME_S  # until keep_history says otherwise
        try:
            import tf2_ros  # noqa: F401  (a sourced ROS 2)

            self.backend = "tf2_ros"
        except ImportError:
            self.backend = "lisa_ros"
        self._buffer = None
        self._subscriptions = []

    def start(self) -> None:
        """Subscribe to TF (once; later calls do nothing). Raises TransformError when no TF
        message type is installed."""
        with self._lock:
            if self._started:
                return
            if self.backend == "tf2_ros":
                import tf2_ros

                from rclpy.duration import Duration

                self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=self._history_s))
                self._listener = tf2_ros.TransformListener(self._buffer, self._node, spin_thread=False)
            else:
                try:
                    from tf2_msgs.msg import TFMessage
                except ImportError as exc:
                    raise TransformError("TF is unavailable: neither tf2_ros nor tf2_msgs is installed "
                                         "(`make install` builds tf2_msgs)") from exc
                self._buffer = TransformBuffer(cache_time_s=self._history_s)
                self._subscriptions = [
                    self._node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS,
                                                   callback_group=self._group),
                    self._node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                                                   TF_STATIC_QOS, callback_group=self._group)]
            self._started = True

    def keep_history(self, seconds: float) -> None:
        """Keep ``seconds`` of moving transforms from now on (our buffer follows at once; tf2_ros's
        cache length is fixed when it starts, so it keeps the value :meth:`start` saw)."""
        self._history_s = seconds
        if isinstance(self._buffer, TransformBuffer):
            self._buffer.cache_time_s = seconds

    def _on_tf(self, message, static: bool) -> None:
        for problem in add_tf_message(self._buffer, message, static):
            self._node.get_logger().warning(problem, throttle_duration_sec=5.0)

    def lookup(self, target_frame: str, source_frame: str, stamp, timeout_s: float) -> Transform:
        self.start()
        if self.backend == "lisa_ros":
            return self._buffer.wait_for_transform(target_frame, source_frame, time_seconds(stamp), timeout_s)
        import tf2_ros
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            stamped = self._buffer.lookup_transform(target_frame, source_frame, Time.from_msg(stamp),
                                                    timeout=Duration(seconds=timeout_s))
        except tf2_ros.TransformException as exc:
            raise TransformError(str(exc)) from exc
        return transform_from_msg(stamped.transform)


class TargetTransform:
    """One request's transform from its image's optical frame into its target frame.

    Looked up at the image's stamp the first time :meth:`get` is called (by the first object with
    3D, so the action's first object already carries its target pose), then reused for every
    object of the request; a failed lookup is not repeated, except once more, without waiting, by
    ``get(retry=True)`` (when the answer is complete: TF for the stamp may have arrived since).
    ``frame``: the target frame ("" = none: :meth:`get` is None); ``header``: the source image's;
    ``wait_s()``: how long a lookup may wait for TF, asked when it runs (the node passes its
    tf_timeout, cut at the request's deadline). ``error``: why the last lookup failed,
    "source -> target: reason" ("" when none failed or the retry succeeded).
    """

    def __init__(self, tf: TfLookup | None, frame: str, header, wait_s: Callable[[], float]):
        self.frame = frame.lstrip("/")  # tf2 frame ids have no leading "/"
        self.error = ""
        self._tf, self._header, self._wait_s = tf, header, wait_s
        self._tries = 0
        self._transform: Transform | None = None

    def get(self, retry: bool = False) -> Transform | None:
        """target_from_optical, or None (no target frame, or the lookup failed: see ``error``)."""
        if not self.frame or self._transform is not None or self._tries >= (2 if retry else 1):
            return self._transform
        self._tries += 1
        source = self._header.frame_id.lstrip("/")
        try:
            if not source:
                raise TransformError("the image header has no frame_id")
            if self._tf is None:
                raise TransformError("TF is not available in this node")
            wait = max(0.0, self._wait_s()) if self._tries == 1 else 0.0
            self._transform = self._tf.lookup(self.frame, source, self._header.stamp, wait)
            self.error = ""
        except (TransformError, ValueError) as exc:  # ValueError: a stamp tf2_ros cannot take (negative)
            self.error = f"{source or '(no frame)'} -> {self.frame}: {exc}"
        return self._transform


def wait_until(deadline: float, timeout_s: float) -> Callable[[], float]:
    """A ``wait_s`` for :class:`TargetTransform`: ``timeout_s``, cut at ``deadline`` (monotonic s)."""
    return lambda: min(timeout_s, deadline - time.monotonic())
