"""Helpers for the child processes that the demo, the benchmarks and the tests start."""
from __future__ import annotations


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when its parent dies,
    however the parent dies, so no camera, node or publisher outlives a killed run (Linux)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def localhost_discovery() -> dict[str, str]:
    """The environment that keeps DDS discovery on this machine: ``ROS_AUTOMATIC_DISCOVERY_RANGE``
    (Iron on), and ``ROS_LOCALHOST_ONLY`` where the sourced ROS 2 is Humble, which knows only that."""
    import os

    variables = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    if os.environ.get("ROS_DISTRO") == "humble":
        variables["ROS_LOCALHOST_ONLY"] = "1"
    return variables


def isolated_ros_environment(domain_id: int, fastdds_profile: str) -> dict[str, str]:
    """``os.environ`` plus what keeps a benchmark's processes to themselves: their own
    ``ROS_DOMAIN_ID``, discovery on localhost only, Fast DDS with ``fastdds_profile``, unbuffered
    Python output."""
    import os

    from lisa_ros.resources import with_dds_profile

    return with_dds_profile(dict(os.environ, ROS_DOMAIN_ID=str(domain_id), RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
                                 PYTHONUNBUFFERED="1", **localhost_discovery()), fastdds_profile)


def node_command(parameters: dict[str, str]) -> list[str]:
    """The command line that runs the lisa_ros node with ``parameters`` (name -> value text)."""
    import sys

    command = [sys.executable, "-m", "lisa_ros.ros.node", "--ros-args"]
    for key, value in parameters.items():
        command += ["-p", f"{key}:={value}"]
    return command
