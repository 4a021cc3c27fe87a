"""The launch file, parameters file and rviz config, checked statically (launch/rviz2 are not
installable here): arguments documented, names they pass exist, files they name are installed."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import sys
from pathlib import Path

import yaml

from lisa_ros.model.options import PRECISION_CHOICES, QUANTIZATION_CHOICES
from lisa_ros.model.prompts import DEFAULT_EXPLAIN_SUFFIX, DEFAULT_SEGMENT_SUFFIX
from lisa_ros.resources import share_directory
from lisa_ros.ros.parameters import (
    CAMERA_SPECS,
    CHOICES,
    LIVE_PARAMETERS,
    SPECS,
    CameraConfig,
    LiveParameters,
    NodeConfig,
)

SHARE = share_directory()
LAUNCH = SHARE / "launch" / "lisa_ros.launch.py"


def _launch_calls(name: str):
    tree = ast.parse(LAUNCH.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def _lisa_ros_value(expression: ast.expr):
    """Evaluate a launch-file expression that may use names the launch file imports from lisa_ros
    (launch itself is not importable here, lisa_ros is): a literal, a name, or list(name)."""
    names = {}
    for statement in ast.parse(LAUNCH.read_text()).body:
        if isinstance(statement, ast.ImportFrom) and statement.module.startswith("lisa_ros"):
            module = importlib.import_module(statement.module)
            names.update({alias.asname or alias.name: getattr(module, alias.name) for alias in statement.names})
    code = compile(ast.Expression(expression), str(LAUNCH), "eval")
    return eval(code, {"__builtins__": {"list": list, "tuple": tuple}}, names)


def test_launch_arguments_are_declared_with_descriptions():
    declared = {}
    for call in _launch_calls("DeclareLaunchArgument"):
        keywords = {k.arg: k.value for k in call.keywords}
        assert "description" in keywords and ast.literal_eval(keywords["description"]).strip()
        declared[ast.literal_eval(call.args[0])] = keywords
    assert {"model", "quantization", "params_file", "namespace", "image_topic", "depth_topic",
            "camera_info_topic", "debug", "rviz"} <= set(declared)
    # The choices are the model's own (lisa_ros.model.options), not a copy.
    assert _lisa_ros_value(declared["quantization"]["choices"]) == list(QUANTIZATION_CHOICES) == ["none", "4bit", "8bit"]
    assert _lisa_ros_value(declared["precision"]["choices"]) == list(PRECISION_CHOICES)
    assert CHOICES == {"precision": PRECISION_CHOICES, "quantization": QUANTIZATION_CHOICES}


def test_launch_starts_the_installed_executable_with_known_parameters():
    (node,) = _launch_calls("LifecycleNode")
    keywords = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(keywords["package"]) == "lisa_ros"
    executable = ast.literal_eval(keywords["executable"])
    assert (SHARE.parent.parent / "lib" / "lisa_ros" / executable).is_file()  # where ros2 run looks
    assert (Path(sys.executable).parent / executable).is_file()  # the console script
    overrides = [d for d in ast.walk(keywords["parameters"]) if isinstance(d, ast.Dict)][0]
    known = {s.name for s in SPECS} | {f"camera.{s.name}" for s in CAMERA_SPECS}
    assert {ast.literal_eval(k) for k in overrides.keys} <= known


def test_files_named_by_the_launch_file_are_installed():
    text = LAUNCH.read_text()
    for name in ("lisa_ros.yaml", "lisa_ros.rviz", "fastdds.xml"):
        assert f'"{name}"' in text and (SHARE / "config" / name).is_file()


def test_parameters_file_matches_the_declared_parameters():
    params = yaml.safe_load((SHARE / "config" / "lisa_ros.yaml").read_text())["/**"]["ros__parameters"]
    known = {s.name for s in SPECS}
    camera = params.pop("camera")
    assert set(params) <= known and params["cameras"] == ["camera"]
    assert set(camera) == {s.name for s in CAMERA_SPECS}
    for spec in SPECS:  # same types as the declared defaults (a mismatch fails at start-up)
        if spec.name in params and spec.name != "model":
            assert type(params[spec.name]) is type(spec.default), spec.name


def test_rviz_config_shows_the_debug_image_and_markers():
    config = yaml.safe_load((SHARE / "config" / "lisa_ros.rviz").read_text())
    topics = {d["Topic"]["Value"]: d["Class"] for d in config["Visualization Manager"]["Displays"] if "Topic" in d}
    assert topics["/lisa_ros/debug_image"] == "rviz_default_plugins/Image"
    assert topics["/lisa_ros/markers"] == "rviz_default_plugins/MarkerArray"


def test_typed_configs_have_one_field_per_parameter():
    """NodeConfig, CameraConfig and LiveParameters are views of the Spec tables: the same names
    (parameters.read builds them with **values, so a mismatch would fail at configure)."""
    assert [f.name for f in dataclasses.fields(NodeConfig)] == [s.name for s in SPECS]
    assert [f.name for f in dataclasses.fields(CameraConfig)] == ["name"] + [s.name for s in CAMERA_SPECS]
    assert [f.name for f in dataclasses.fields(LiveParameters)] == LIVE_PARAMETERS
    types = {f.name: f.type for f in dataclasses.fields(NodeConfig)}  # strings (postponed annotations)
    for spec in SPECS:
        if spec.name != "cameras":  # the names, resolved to one CameraConfig each
            assert types[spec.name] == type(spec.default).__name__, spec.name
    assert {s.name: s.default for s in SPECS}["segment_suffix"] == DEFAULT_SEGMENT_SUFFIX
    assert {s.name: s.default for s in SPECS}["explain_suffix"] == DEFAULT_EXPLAIN_SUFFIX
