"""The shipped Fast DDS profile takes effect on this lane's Fast DDS (issue 28).

Fast DDS 3 (Kilted) reads FASTDDS_DEFAULT_PROFILES_FILE and Fast DDS 2 (Humble, Jazzy) reads
FASTRTPS_DEFAULT_PROFILES_FILE, each ignoring the other's. The profile's 64 MiB shared-memory
segment (instead of Fast DDS's 0.5 MiB default) is what keeps 1080p frames from being dropped, so
the test looks for that segment in /dev/shm once a participant exists.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from std_msgs.msg import String

from lisa_ros.resources import PROFILE_VARIABLES, environment_with_dds_profile

pytestmark = pytest.mark.ros
SHM = Path("/dev/shm")
SEGMENT_BYTES = 64 * 2**20  # config/fastdds*.xml: <segment_size>67108864</segment_size>


def segments() -> dict[str, int]:
    """Fast DDS's shared-memory segments (fastdds_* for 3.x, fastrtps_* for 2.x) and their sizes."""
    found = {}
    for path in SHM.iterdir():
        if path.name.startswith(("fastdds_", "fastrtps_")) and "port" not in path.name:
            try:
                found[path.name] = path.stat().st_size
            except FileNotFoundError:  # another participant went away meanwhile
                pass
    return found


def test_the_profile_variable_follows_the_fast_dds_version(monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", "humble")
    assert set(environment_with_dds_profile("fastdds.xml", base={})) & set(PROFILE_VARIABLES) == {
        "FASTRTPS_DEFAULT_PROFILES_FILE"}
    monkeypatch.setenv("ROS_DISTRO", "kilted")
    # A profile variable left in the environment goes: Kilted would prefer the old name's file.
    env = environment_with_dds_profile("fastdds.xml", base={"FASTRTPS_DEFAULT_PROFILES_FILE": "/theirs.xml"})
    assert set(env) & set(PROFILE_VARIABLES) == {"FASTDDS_DEFAULT_PROFILES_FILE"}
    monkeypatch.delenv("ROS_DISTRO")  # the pip venv: the installed rclpy wheel tells
    expected = "FASTRTPS_DEFAULT_PROFILES_FILE" if rclpy_major() < 9 else "FASTDDS_DEFAULT_PROFILES_FILE"
    assert set(environment_with_dds_profile("fastdds.xml", base={})) & set(PROFILE_VARIABLES) == {expected}


def rclpy_major() -> int:
    from importlib.metadata import version

    return int(version("ros-rclpy").split(".")[0])


def test_the_shipped_profile_sets_up_its_shared_memory_segment(ros_domain):
    import rclpy

    assert any(ros_domain.env.get(name) for name in PROFILE_VARIABLES)
    before = segments()
    node = rclpy.create_node("dds_profile_probe", context=ros_domain.context())
    try:
        publisher = node.create_publisher(String, "dds_profile_probe", 10)
        publisher.publish(String(data="x"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = {name: size for name, size in segments().items() if name not in before}
            if any(size >= SEGMENT_BYTES for size in new.values()):
                break
            time.sleep(0.1)
        assert any(size >= SEGMENT_BYTES for size in new.values()), (os.environ.get("RMW_IMPLEMENTATION"), new)
    finally:
        node.destroy_node()
