"""Recorded data out: an output rosbag2 (MCAP by default, or sqlite3) that ``ros2 bag``, rviz and
Foxglove accept.

Messages are rclpy messages serialised by rclpy (the bytes a publisher sends). Each topic's
connection carries its type's message definition (with its dependencies, as rosbag2 writes it)
and its RIHS01 type hash: for types the ``rosbags`` type store knows (the standard messages) from
it, for the others (lisa_ros, vision_msgs) from the interface package's installed ``.msg`` files
and the hash that rosidl generated beside them (``share/<package>/msg/<Name>.json``), the one DDS
peers compare. Topics copied from an input bag keep the input's definitions and bytes.

:class:`BagRecorder` writes the bag inside ``.<name>.partial/`` beside ``<out>`` and moves it to
``<out>`` only when the run closes it successfully; a run that fails removes the partial bag, so
a bag at ``<out>`` is always complete.
"""
from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

from lisa_ros.errors import DataError, UsageError

STORAGES = ("mcap", "sqlite3")
_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64", "string", "wstring", "time", "duration"}


def msgtype_of(msg) -> str:
    """``sensor_msgs/msg/Image`` for an rclpy ``sensor_msgs.msg.Image``."""
    package = type(msg).__module__.split(".")[0]
    return f"{package}/msg/{type(msg).__name__}"


def interface_share(package: str) -> Path:
    """``share/<package>`` of an installed interface package: the ament index, else beside the
    Python package (``<prefix>/lib/pythonX.Y/site-packages/<package>`` -> ``<prefix>/share``)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except Exception:
        pass
    module = importlib.import_module(package)
    for parent in Path(module.__file__).resolve().parents:
        if (parent / "share" / package).is_dir():
            return parent / "share" / package
    candidate = Path(sys.prefix) / "share" / package
    if candidate.is_dir():
        return candidate
    raise DataError(f"cannot find the installed interface files of {package} (share/{package})")


def _dependencies(text: str, package: str) -> list[str]:
    """The message types a .msg text's fields use ("pkg/msg/Name"); constants are of primitive types."""
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        field_type = re.sub(r"\[.*\]$", "", line.split()[0]).split("<=")[0]
        if field_type in _PRIMITIVES:
            continue
        if "/" in field_type:
            owner, name = field_type.split("/", 1)
            found.append(f"{owner}/msg/{name.split('/')[-1]}")
        elif field_type == "Header":
            found.append("std_msgs/msg/Header")
        else:
            found.append(f"{package}/msg/{field_type}")
    return found


def _register(store, msgtype: str) -> None:
    """Teach ``store`` (a rosbags type store) ``msgtype`` and its dependencies from their .msg files."""
    from rosbags.typesys import get_types_from_msg

    if msgtype in store.types:
        return
    package, _, name = msgtype.split("/")
    path = interface_share(package) / "msg" / f"{name}.msg"
    if not path.is_file():
        raise DataError(f"no message definition for {msgtype} ({path} is missing)")
    text = path.read_text()
    for dependency in _dependencies(text, package):
        _register(store, dependency)
    store.register(get_types_from_msg(text, msgtype))


def generated_type_hash(msgtype: str) -> str | None:
    """The RIHS01 hash rosidl generated for ``msgtype`` (its ``.json`` type description), or None."""
    package, _, name = msgtype.split("/")
    try:
        path = interface_share(package) / "msg" / f"{name}.json"
        hashes = json.loads(path.read_text())["type_hashes"]
    except (DataError, OSError, ValueError, KeyError):
        return None
    return next((h["hash_string"] for h in hashes if h["type_name"] == msgtype), None)


class BagRecorder:
    """An output bag at ``out`` (a rosbag2 folder), written inside ``.<name>.partial/`` beside it
    until :meth:`close` with ``complete=True``. ``storage``: "mcap" or "sqlite3". UsageError when
    ``out`` already exists (nothing is overwritten) or the storage is unknown."""

    def __init__(self, out: str | Path, storage: str = "mcap"):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        if storage not in STORAGES:
            raise UsageError(f"unknown bag storage {storage!r} (one of {', '.join(STORAGES)})")
        self.out = Path(out)
        if self.out.exists():
            raise UsageError(f"{self.out} already exists: choose another --out or remove it")
        self.partial = self.out.with_name(f".{self.out.name}.partial")
        shutil.rmtree(self.partial, ignore_errors=True)  # left by a run that was killed
        self.partial.mkdir(parents=True)
        self.store = get_typestore(Stores.ROS2_KILTED)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.partial / self.out.name, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, object] = {}

    def copy_topic(self, connection) -> None:
        """Add an input bag's topic (a rosbags connection) with its own definition and hash."""
        if connection.topic in self._connections:
            return
        ext = getattr(connection, "ext", None)
        self._connections[connection.topic] = self._writer.add_connection(
            connection.topic, connection.msgtype, msgdef=connection.msgdef.data, rihs01=connection.digest,
            serialization_format=getattr(ext, "serialization_format", "cdr"),
            offered_qos_profiles=getattr(ext, "offered_qos_profiles", ()) or ())

    def write_raw(self, topic: str, log_ns: int, raw: bytes) -> None:
        """Write serialised bytes on a topic added by :meth:`copy_topic`."""
        self._writer.write(self._connections[topic], int(log_ns), bytes(raw))

    def write(self, topic: str, log_ns: int, msg) -> None:
        """Write an rclpy message at log time ``log_ns`` (ns); the topic is added on first use."""
        from rclpy.serialization import serialize_message

        if topic not in self._connections:
            msgtype = msgtype_of(msg)
            _register(self.store, msgtype)
            msgdef, _ = self.store.generate_msgdef(msgtype, ros_version=2)
            rihs01 = generated_type_hash(msgtype) or self.store.hash_rihs01(msgtype)
            self._connections[topic] = self._writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=rihs01)
        self._writer.write(self._connections[topic], int(log_ns), serialize_message(msg))

    def close(self, complete: bool) -> Path | None:
        """Finish the bag: with ``complete`` rename it to ``out`` and return that path; otherwise
        remove it and return None."""
        try:
            self._writer.close()
        except Exception:
            if complete:
                raise
        if not complete:
            shutil.rmtree(self.partial, ignore_errors=True)
            return None
        (self.partial / self.out.name).rename(self.out)
        self.partial.rmdir()
        return self.out
