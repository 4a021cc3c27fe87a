"""Recorded data in: a rosbag2 (MCAP or sqlite3 storage) read as the node would have received it.

``rosbags`` (a registry package, pure Python) reads both storage formats; each message is then
deserialised into the rclpy message class of its type (``sensor_msgs/msg/Image`` ->
``sensor_msgs.msg.Image``), so that replaying a bag runs the node's own code on the same objects a
subscription delivers.

:func:`open_bag` opens a bag folder (``metadata.yaml`` plus its storage files) or a single
``.mcap`` file; :func:`find_topics` picks the camera's topics (colour, depth, camera_info) by their
types and contents, or checks the ones asked for; :func:`read_messages` yields each message
(:class:`BagMessage`: topic, log time in ns, rclpy message, bytes) in log-time order. Anything wrong with the bag (missing, unreadable, truncated,
no image topic, an unknown topic, a type without an rclpy class here) is a :class:`DataError` with
the reason.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

from lisa_ros.errors import DataError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF = "tf2_msgs/msg/TFMessage"
# Raw encodings that hold depth, not colour (REP 118: 16UC1 millimetres, 32FC1 metres).
DEPTH_ENCODINGS = ("16UC1", "32FC1")


@dataclass(frozen=True)
class BagTopics:
    """The topics of one camera in a bag: ``colour`` (Image or CompressedImage), ``depth``
    (registered depth, Image 16UC1/32FC1 or compressedDepth; None when the bag has none),
    ``camera_info`` (None when none), and the TF topics present (``/tf``, ``/tf_static``)."""

    colour: str
    depth: str | None = None
    camera_info: str | None = None
    tf: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(t for t in (self.colour, self.depth, self.camera_info, *self.tf) if t)


class BagMessage(NamedTuple):
    """One message of a bag: its topic, log time (ns), rclpy message and serialised bytes."""

    topic: str
    log_ns: int
    msg: object
    raw: bytes


def open_bag(path: str | Path):
    """An opened ``rosbags.highlevel.AnyReader`` of the bag at ``path`` (a rosbag2 folder or one
    ``.mcap`` file); the caller closes it. DataError when it does not exist or cannot be read."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise DataError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise DataError(f"{path} is not a rosbag2 folder (no metadata.yaml)")
    reader = AnyReader([path])
    try:
        reader.open()
    except Exception as exc:  # rosbags raises its own errors, and sqlite/mcap ones, for broken files
        raise DataError(f"cannot read the bag {path}: {exc}") from exc
    return reader


def message_class(msgtype: str):
    """The rclpy message class of ``msgtype`` ("pkg/msg/Name"); DataError when this Python has
    none (an interface package that is not installed)."""
    package, _, name = msgtype.rpartition("/")
    try:
        return getattr(importlib.import_module(package.replace("/", ".")), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DataError(f"messages of type {msgtype} cannot be decoded here: no Python interface "
                        f"package {package.split('/')[0]!r} is installed") from exc


def _first(reader, connections):
    for connection, _, raw in reader.messages(connections=connections):
        return _deserialise(raw, connection)
    return None


def _deserialise(raw: bytes, connection):
    from rclpy.serialization import deserialize_message

    try:
        return deserialize_message(bytes(raw), message_class(connection.msgtype))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"a message on {connection.topic} ({connection.msgtype}) cannot be decoded: {exc}") from exc


def _is_depth(msg) -> bool:
    if hasattr(msg, "encoding"):
        return msg.encoding in DEPTH_ENCODINGS
    return "compresseddepth" in (msg.format or "").lower()


def _namespace(topic: str) -> str:
    """``/camera/color/image_raw`` -> ``/camera/color``: where the camera's other topics live."""
    return topic.rsplit("/", 1)[0]


def find_topics(reader, colour: str | None = None, depth: str | None = None,
                camera_info: str | None = None) -> BagTopics:
    """The camera's topics in the bag: those given (checked: present, of an image or CameraInfo
    type, colour not depth), the others found. Colour: the one Image/CompressedImage topic whose
    first message is not depth (with several, the one named like a colour stream: "color", "rgb";
    otherwise DataError listing them). Depth: an image topic whose first message is 16UC1/32FC1 or
    compressedDepth, the one nearest the colour topic's namespace. camera_info: a CameraInfo topic
    in the colour topic's namespace, or the only one. DataError when there is no colour topic."""
    types = {c.topic: c.msgtype for c in reader.connections}
    for name, topic, wanted in (("camera", colour, (IMAGE, COMPRESSED)), ("depth", depth, (IMAGE, COMPRESSED)),
                                ("camera_info", camera_info, (CAMERA_INFO,))):
        if topic is not None and topic not in types:
            raise DataError(f"the bag has no topic {topic} (its topics: {', '.join(sorted(types)) or 'none'})")
        if topic is not None and types[topic] not in wanted:
            raise DataError(f"--{name.replace('_', '-')}-topic {topic} holds {types[topic]}, not {' or '.join(wanted)}")
    images = sorted(t for t, kind in types.items() if kind in (IMAGE, COMPRESSED))
    depth_like = {}
    for topic in images:
        first = _first(reader, [c for c in reader.connections if c.topic == topic])
        depth_like[topic] = first is not None and _is_depth(first)
    if colour is None:
        colours = [t for t in images if not depth_like[t]]
        if not colours:
            raise DataError("the bag has no colour image topic (sensor_msgs/msg/Image or CompressedImage; "
                            f"its topics: {', '.join(f'{t} ({k})' for t, k in sorted(types.items())) or 'none'})")
        named = [t for t in colours if any(word in t.lower() for word in ("color", "colour", "rgb"))]
        candidates = named if len(colours) > 1 and named else colours
        if len(candidates) > 1:
            raise DataError(f"the bag has several colour image topics ({', '.join(candidates)}): "
                            "choose one with --camera-topic")
        colour = candidates[0]
    elif depth_like[colour]:
        raise DataError(f"{colour} holds depth images, not colour: give the colour topic with --camera-topic")
    if depth is None:
        depths = sorted((t for t in images if depth_like[t]),
                        key=lambda t: (not _namespace(t).startswith(_namespace(_namespace(colour))), t))
        depth = depths[0] if depths else None
    if camera_info is None:
        infos = sorted(t for t, kind in types.items() if kind == CAMERA_INFO)
        near = [t for t in infos if _namespace(t) == _namespace(colour)]
        camera_info = near[0] if near else (infos[0] if len(infos) == 1 else None)
    tf = tuple(t for t in ("/tf", "/tf_static") if types.get(t) == TF)
    return BagTopics(colour, depth, camera_info, tf)


def read_messages(reader, topics: tuple[str, ...], start_ns: int | None = None,
                  end_ns: int | None = None) -> Iterator[BagMessage]:
    """The messages of ``topics`` (:class:`BagMessage`) in log-time order, from ``start_ns`` to
    ``end_ns`` (log times, inclusive; None = the bag's start or end). A message that cannot be
    decoded is a DataError naming its topic (a truncated bag ends with one)."""
    connections = [c for c in reader.connections if c.topic in topics]
    try:
        for connection, log_ns, raw in reader.messages(connections=connections, start=start_ns,
                                                        stop=None if end_ns is None else end_ns + 1):
            yield BagMessage(connection.topic, log_ns, _deserialise(raw, connection), raw)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"the bag cannot be read to its end: {exc}") from exc


def header_stamps_ns(reader, topic: str, start_ns: int | None = None, end_ns: int | None = None) -> list[int]:
    """The header stamps (ns) of ``topic``'s messages (any type that starts with a
    std_msgs/Header: Image, CompressedImage, CameraInfo...) in a window of log times, read from
    the serialised bytes without decoding the messages (a fast pass over a long bag): CDR's
    4-byte encapsulation, then the stamp's int32 sec and uint32 nanosec. DataError as
    :func:`read_messages`."""
    import struct

    connections = [c for c in reader.connections if c.topic == topic]
    stamps = []
    try:
        for _, _, raw in reader.messages(connections=connections, start=start_ns,
                                         stop=None if end_ns is None else end_ns + 1):
            order = "<" if raw[1] & 1 else ">"  # CDR_LE / CDR_BE
            sec, nanosec = struct.unpack_from(f"{order}iI", raw, 4)
            stamps.append(sec * 1_000_000_000 + nanosec)
    except Exception as exc:
        raise DataError(f"the bag cannot be read on {topic}: {type(exc).__name__}: {exc}") from exc
    return stamps


def log_window(reader, start_s: float | None, end_s: float | None) -> tuple[int | None, int | None]:
    """(start, end) log times in ns of a window given in seconds from the bag's start (None: the
    bag's start or end), as :func:`read_messages` takes them."""
    start = reader.start_time + int(start_s * 1e9) if start_s is not None else None
    end = reader.start_time + int(end_s * 1e9) if end_s is not None else None
    return start, end

