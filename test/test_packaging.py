"""The package as users get it: interfaces, metadata, data files, and the colcon workspace build."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
try:
    import tomllib  # novermin (3.11+; the fallback below is for 3.10)
except ModuleNotFoundError:  # Python 3.10 (Humble): the same parser from PyPI
    import tomli as tomllib
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_interfaces_have_the_documented_fields():
    from lisa_ros.action import ReasonSegment as Action
    from lisa_ros import timing
    from lisa_ros.msg import SegmentationResult, SegmentedObject, StageTimings, Status
    from lisa_ros.srv import ReasonSegment

    request = {"command": "string", "image": "sensor_msgs/Image", "camera": "string",
               "explain": "boolean", "session_id": "string", "depth": "sensor_msgs/Image",
               "camera_info": "sensor_msgs/CameraInfo", "min_stamp": "builtin_interfaces/Time",
               "timeout": "builtin_interfaces/Duration", "point_cloud": "boolean", "target_frame": "string"}
    response = {"success": "boolean", "result": "lisa_ros/SegmentationResult"}
    assert ReasonSegment.Request.get_fields_and_field_types() == request
    assert ReasonSegment.Response.get_fields_and_field_types() == response
    assert Action.Goal.get_fields_and_field_types() == request
    assert Action.Result.get_fields_and_field_types() == response
    # The per-object message: field names the tracking issue and external checks rely on.
    assert SegmentedObject.get_fields_and_field_types() == {
        "id": "uint32", "label": "string", "score": "float", "mask": "sensor_msgs/Image",
        "box": "sensor_msgs/RegionOfInterest", "pose": "geometry_msgs/PoseStamped", "extent": "geometry_msgs/Vector3",
        "valid_points": "uint32", "target_pose": "geometry_msgs/PoseStamped"}
    assert SegmentationResult.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "status": "lisa_ros/Status", "command": "string", "answer": "string",
        "explanation": "string", "session_id": "string", "objects": "sequence<lisa_ros/SegmentedObject>",
        "instance_labels": "sensor_msgs/Image", "camera_info": "sensor_msgs/CameraInfo",
        "depth_header": "std_msgs/Header", "target_frame": "string", "transform_error": "string",
        "no_3d": "boolean", "no_target_pose": "boolean", "point_cloud": "sensor_msgs/PointCloud2",
        "warnings": "sequence<string>", "generated_tokens": "uint32", "timings": "lisa_ros/StageTimings"}
    assert StageTimings.get_fields_and_field_types() == dict.fromkeys(
        ("total", "queue_wait", "preprocess", "image_encoding", "generation", "mask_decoding", "postprocess"),
        "builtin_interfaces/Duration")
    assert tuple(StageTimings.get_fields_and_field_types()) == timing.STAGES  # one vocabulary, in message order
    assert Action.Feedback.get_fields_and_field_types() == {
        "stage": "string", "elapsed": "builtin_interfaces/Duration", "partial_answer": "string",
        "generated_tokens": "uint32", "objects": "sequence<lisa_ros/SegmentedObject>"}
    assert Action.Feedback.STAGE_GENERATING == "generating"
    codes = ("OK", "INVALID_COMMAND", "INVALID_IMAGE", "NO_FRAME", "STALE_FRAME", "UNKNOWN_CAMERA",
             "UNKNOWN_SESSION", "BUSY", "NOT_READY", "MODEL_ERROR", "CANCELLED", "DEADLINE_EXCEEDED", "NO_TARGET")
    assert {name: getattr(Status, name) for name in codes} == {name: index for index, name in enumerate(codes)}
    from lisa_ros.result_file import STATUS_CODES  # the ROS-free copy `lisa-ros segment` writes with

    assert STATUS_CODES == {name: getattr(Status, name) for name in dir(Status)
                            if name.isupper() and isinstance(getattr(Status, name), int)}
    # Declared once: no interface but Status carries status constants.
    for interface in (ReasonSegment.Response, Action.Result, SegmentationResult):
        assert not [name for name in dir(interface) if name in codes]


def test_messages_serialize_through_the_generated_type_support():
    from rclpy.serialization import deserialize_message, serialize_message

    from lisa_ros.msg import SegmentationResult, SegmentedObject, Status

    msg = SegmentationResult(answer="Sure, [SEG].", status=Status(code=Status.NO_TARGET, message="nothing fits"))
    msg.header.frame_id = "cam_optical"
    msg.timings.total.sec, msg.timings.total.nanosec = 1, 250_000_000
    msg.objects = [SegmentedObject(id=7, label="red cup", score=0.75)]
    msg.objects[0].pose.pose.position.x = math.nan
    back = deserialize_message(serialize_message(msg), SegmentationResult)
    assert back.answer == "Sure, [SEG]." and back.header.frame_id == "cam_optical"
    assert (back.status.code, back.status.message) == (Status.NO_TARGET, "nothing fits")
    assert (back.timings.total.sec, back.timings.total.nanosec) == (1, 250_000_000)
    assert (back.objects[0].id, back.objects[0].label, back.objects[0].score) == (7, "red cup", 0.75)
    assert math.isnan(back.objects[0].pose.pose.position.x)


_FIELD = re.compile(r"^[A-Za-z][\w/]*(\[\d*\])?\s+\w+")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for d in ("msg", "srv", "action")
                                        for p in (ROOT / d).iterdir()))
def test_every_interface_field_is_documented(path):
    undocumented = []
    lines = (ROOT / path).read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not _FIELD.match(stripped) or "=" in stripped.split("#")[0]:
            continue  # not a field (comments, separators, constants)
        previous = lines[index - 1].strip() if index else ""
        if "#" not in stripped and not previous.startswith("#"):
            undocumented.append(stripped)
    assert not undocumented, f"fields without a comment in {path}: {undocumented}"


def test_versions_and_names_agree_across_build_files():
    from catkin_pkg.package import parse_package

    import lisa_ros

    package = parse_package(str(ROOT / "package.xml"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert package.package_format == 3
    assert package.name == "lisa_ros" == pyproject["project"]["name"]
    assert package.version == pyproject["project"]["version"] == lisa_ros.__version__
    assert package.get_build_type() == "ament_cmake"
    depends = {d.name for d in package.build_depends + package.exec_depends}
    assert {"std_msgs", "sensor_msgs", "geometry_msgs", "builtin_interfaces", "rclpy"} <= depends
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "project(lisa_ros)" in cmake


def pins(path: Path) -> dict[str, str]:
    """name -> exact version of the ``name==version`` lines of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#")[0].split(";")[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==")
            found[name.strip()] = version.strip()
    return found


LANES = sorted(p.name for p in (ROOT / "requirements").iterdir() if (p / "ros.txt").is_file())


def test_build_requirements_file_matches_pyproject_build_requires():
    # A plain `pip install .` (isolated build) is the Kilted lane.
    listed = {line.split("#")[0].strip() for line in (ROOT / "requirements/kilted/build.txt").read_text().splitlines()}
    listed.discard("")
    for pyproject in [ROOT / "pyproject.toml", *sorted((ROOT / "interfaces").glob("*/pyproject.toml"))]:
        build_requires = set(tomllib.loads(pyproject.read_text())["build-system"]["requires"])
        assert build_requires <= listed, (pyproject, build_requires - listed)


def test_runtime_pins_match_between_requirements_and_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {d for d in pyproject["project"]["dependencies"] if d.startswith("ros-")}
    pinned = {f"{name}=={version}" for name, version in pins(ROOT / "requirements/kilted/ros.txt").items()
              if name.startswith("ros-")}
    assert declared == pinned


def test_each_lane_pins_one_ros_release():
    assert LANES == ["jazzy", "kilted"]
    versions = {lane: {**pins(ROOT / f"requirements/{lane}/build.txt"), **pins(ROOT / f"requirements/{lane}/ros.txt")}
                for lane in LANES}
    for lane in LANES:  # a package pinned in both files of a lane has one version
        build, runtime = pins(ROOT / f"requirements/{lane}/build.txt"), pins(ROOT / f"requirements/{lane}/ros.txt")
        assert all(build[name] == runtime[name] for name in build.keys() & runtime.keys()), lane
    # The lanes differ where the releases differ (not a copy of one another).
    assert versions["jazzy"]["ros-rclpy"].startswith("7.") and versions["kilted"]["ros-rclpy"].startswith("9.")


def test_the_installed_ros_packages_are_one_lane():
    """The venv holds exactly one lane's ROS 2 runtime pins (no mix of Kilted and Jazzy wheels)."""
    installed = {}
    for lane in LANES:
        wanted = {n: v for n, v in pins(ROOT / f"requirements/{lane}/ros.txt").items() if n.startswith("ros-")}
        installed[lane] = {n: importlib.metadata.version(n) for n in wanted} == wanted
    assert sum(installed.values()) == 1, installed


def test_torchvision_is_not_installed():
    # The only torchvision build on PyPI needs CUDA; installed on these machines it breaks imports.
    assert importlib.util.find_spec("torchvision") is None


def test_data_files_are_found_through_the_installed_package():
    from lisa_ros.resources import config_path

    for name in ("fastdds.xml", "fastdds_localhost.xml"):
        path = config_path(name)
        assert path.is_file() and "segment_size" in path.read_text()


def test_console_script_runs():
    script = Path(sys.executable).parent / "lisa-ros"
    run = subprocess.run([str(script), "info"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "interfaces: lisa_ros.msg/srv/action importable" in run.stdout


def _source_tree_copy(destination: Path) -> None:
    """The files git tracks (what a user clones), or the tree minus build products."""
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in files.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
    if names:
        for name in names:
            if (ROOT / name).is_file():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, destination / name)
    else:
        shutil.copytree(ROOT, destination, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".venv", "build", "install", "log", ".git", "__pycache__"))


@pytest.mark.slow
def test_colcon_workspace_build_installs_interfaces_executables_and_data(tmp_path):
    """`colcon build` with this package in src/, against the ament/rosidl wheels in the venv."""
    bin_dir = Path(sys.executable).parent
    colcon = bin_dir / "colcon"
    assert colcon.exists(), "colcon missing: `make venv` installs requirements/colcon.txt"
    _source_tree_copy(tmp_path / "src" / "lisa_ros")
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    build = subprocess.run([str(colcon), "build", "--event-handlers", "console_cohesion+"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-5000:] + build.stderr[-5000:]

    prefix = tmp_path / "install" / "lisa_ros"
    assert (prefix / "share/ament_index/resource_index/packages/lisa_ros").is_file()
    assert (prefix / "share/lisa_ros/package.xml").is_file()
    assert (prefix / "share/lisa_ros/config/fastdds.xml").is_file()
    assert (prefix / "share/lisa_ros/launch").is_dir()
    executable = prefix / "lib/lisa_ros/lisa-ros"  # where `ros2 run lisa_ros lisa-ros` looks
    assert executable.is_file() and os.access(executable, os.X_OK)

    # Use the workspace the way a ROS user does: source its setup script, then run things.
    check = (
        "import lisa_ros.srv, lisa_ros.msg, lisa_ros.action\n"
        "from rclpy.serialization import serialize_message, deserialize_message\n"
        "from ament_index_python.packages import get_package_prefix\n"
        "from lisa_ros.msg import SegmentationResult\n"
        "m = SegmentationResult(answer='ok')\n"
        "assert deserialize_message(serialize_message(m), SegmentationResult).answer == 'ok'\n"
        "print(lisa_ros.srv.__file__)\n"
        "print(get_package_prefix('lisa_ros'))\n"
    )
    shell = f". {tmp_path}/install/setup.sh && {sys.executable} -c \"$CHECK\" && {executable} info"
    run = subprocess.run(["bash", "-c", shell], env={**env, "CHECK": check}, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(str(prefix)), lines[0]  # the workspace's build, not the venv's
    assert lines[1] == str(prefix)
    assert "interfaces: lisa_ros.msg/srv/action importable" in run.stdout

    # `colcon test` runs the package's tests (test/ros_tests.txt) from the sourced workspace; three
    # light ones here, the whole list being what the lanes run.
    chosen = "^(test_transforms|test_dds_profile|test_spinning)$"
    shell = (f". {tmp_path}/install/setup.sh && {colcon} test --packages-select lisa_ros --ctest-args -R '{chosen}'"
             f" && {colcon} test-result --test-result-base build/lisa_ros")
    run = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    results = sorted((tmp_path / "build/lisa_ros/test_results/lisa_ros").glob("*.xunit.xml"))
    assert [r.name.split(".")[0] for r in results] == ["test_dds_profile", "test_spinning", "test_transforms"]
    suites = [ElementTree.parse(r).getroot().find("testsuite").attrib for r in results]
    assert all(int(s["tests"]) > 0 and s["failures"] == s["errors"] == s["skipped"] == "0" for s in suites), suites
