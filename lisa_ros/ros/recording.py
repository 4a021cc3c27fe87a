"""Recording live topics into a bag, as ``ros2 bag record`` does, for installs without ros2cli
(not on PyPI): the demo records its camera stream and the node's answers with it.

Each topic is subscribed with its message class and written through
:class:`lisa_ros.ros.bag_output.BagRecorder` (full definitions, rosidl's type hashes, a hidden
partial folder until :meth:`TopicRecorder.close`) at its receive time on the node's clock (sim
time under ``use_sim_time``), as rosbag2's recorder stamps log times. QoS is chosen per topic the
way rosbag2 adapts it: reliable unless a publisher offers only best effort (a reliable
subscription would get nothing from it), transient local only when every publisher offers it.

With ``compress`` raw images are written as image_transport's compressed transports would carry
them, on ``<topic>/compressed`` (colour as lossless PNG) and ``<topic>/compressedDepth`` (depth as
16UC1 millimetres in PNG): a tenth of the size for camera streams, what robots usually record.
"""
from __future__ import annotations

import threading
from pathlib import Path

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from lisa_ros.ros.bag_output import BagRecorder
from lisa_ros.ros.conversions import ImageConversionError, depth_to_compressed, image_to_numpy, numpy_to_compressed

DEPTH_ENCODINGS = ("16UC1", "32FC1")  # mono16 is an intensity (infrared) image: PNG on /compressed

RECORD_DEPTH = 100  # messages kept per topic while the writer is busy


def recording_qos(publishers) -> QoSProfile:
    """The subscription QoS that receives from all of ``publishers`` (``TopicEndpointInfo`` of
    ``node.get_publishers_info_by_topic``): reliable unless one is best effort; transient local
    only when all are (a latched topic's last message arrives at once)."""
    profiles = [p.qos_profile for p in publishers]
    best_effort = any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in profiles)
    latched = bool(profiles) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
    return QoSProfile(depth=RECORD_DEPTH,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class TopicRecorder:
    """Records ``topics`` ({absolute topic name: message class}) from ``node`` into the bag
    ``out`` (MCAP or sqlite3 ``storage``). Subscribe once the publishers exist (their QoS decides
    the subscription's, see :func:`recording_qos`; a topic without publishers yet is subscribed
    reliable). ``compress``: raw images as compressed transports (module docstring). ``counts``:
    messages written per topic (by the name written). UsageError when ``out`` exists."""

    def __init__(self, node, out: str | Path, topics: dict[str, type], storage: str = "mcap", callback_group=None,
                 compress: bool = False):
        self._node = node
        self._compress = compress
        self._recorder = BagRecorder(out, storage)
        self._lock = threading.Lock()
        self._open = True
        self.counts: dict[str, int] = {}
        self._subscriptions = [
            node.create_subscription(msg_type, topic, self._writer(topic),
                                     recording_qos(node.get_publishers_info_by_topic(topic)),
                                     callback_group=callback_group)
            for topic, msg_type in topics.items()]

    def _writer(self, topic: str):
        def write(msg) -> None:
            now = self._node.get_clock().now().nanoseconds
            name = topic
            if self._compress and hasattr(msg, "encoding"):
                try:
                    name, msg = self._compressed(topic, msg)
                except ImageConversionError as exc:  # an encoding PNG cannot hold (bayer, yuv): kept raw
                    self._node.get_logger().warning(f"recording {topic} raw: {exc}", throttle_duration_sec=10.0)
            with self._lock:
                if self._open:
                    self._recorder.write(name, now, msg)
                    self.counts[name] = self.counts.get(name, 0) + 1
        return write

    @staticmethod
    def _compressed(topic: str, msg):
        """(topic, message) as the compressed transport carries a raw Image."""
        pixels = image_to_numpy(msg)
        if msg.encoding in DEPTH_ENCODINGS:
            return f"{topic}/compressedDepth", depth_to_compressed(pixels, msg.encoding, msg.header)
        return f"{topic}/compressed", numpy_to_compressed(pixels, msg.encoding, "png", msg.header)

    def close(self, complete: bool = True) -> Path | None:
        """Stop recording; with ``complete`` the bag appears at ``out`` (returned), else it is
        removed (None)."""
        with self._lock:
            self._open = False
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        return self._recorder.close(complete)
