"""TF lookups for the node's ``target_frame`` outputs: tf2_ros when importable, else our buffer.

With a sourced ROS 2, ``tf2_ros.Buffer`` and ``TransformListener`` do the work. A pip-only install
has no tf2 (it is not on PyPI): then :class:`TfLookup` subscribes to ``/tf`` and ``/tf_static``
(``tf2_msgs/msg/TFMessage``, built by ``make install`` when absent, same type hash as ROS 2's) and
feeds :class:`lisa_ros.transforms.TransformBuffer` (same semantics as tf2: interpolation, no
extrapolation, static edges at every time). The topics are absolute, as tf2's are (remap them for
a namespaced TF tree). The subscriptions start with the first lookup, or at configure when
``target_frame`` is set then, so a node that never asks for TF never deserialises ``/tf``.
"""
from __future__ import annotations

import threading

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from lisa_ros.ros.cameras import stamp_seconds, time_seconds
from lisa_ros.transforms import Transform, TransformBuffer, TransformError

# tf2_ros's listener QoS: /tf keep-last 100; /tf_static transient local (latched), keep-last 100.
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def transform_from_msg(transform) -> Transform:
    """geometry_msgs/Transform -> Transform (quaternion x, y, z, w -> w, x, y, z). ValueError when
    it is not finite or the quaternion is zero."""
    t, q = transform.translation, transform.rotation
    return Transform.from_parts((t.x, t.y, t.z), (q.w, q.x, q.y, q.z))


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

                self._buffer = tf2_ros.Buffer()
                self._listener = tf2_ros.TransformListener(self._buffer, self._node, spin_thread=False)
            else:
                try:
                    from tf2_msgs.msg import TFMessage
                except ImportError as exc:
                    raise TransformError("TF is unavailable: neither tf2_ros nor tf2_msgs is installed "
                                         "(`make install` builds tf2_msgs)") from exc
                self._buffer = TransformBuffer()
                self._subscriptions = [
                    self._node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS,
                                                   callback_group=self._group),
                    self._node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                                                   TF_STATIC_QOS, callback_group=self._group)]
            self._started = True

    def _on_tf(self, message, static: bool) -> None:
        for stamped in message.transforms:
            try:
                self._buffer.set_transform(stamped.header.frame_id, stamped.child_frame_id,
                                           stamp_seconds(stamped.header), transform_from_msg(stamped.transform),
                                           static=static)
            except ValueError as exc:  # one bad transform never drops the others, nor the node
                self._node.get_logger().warning(f"ignored a transform on {'/tf_static' if static else '/tf'}: {exc}",
                                                throttle_duration_sec=5.0)

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
