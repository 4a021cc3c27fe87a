"""The launch file, parameters file and rviz config, checked statically (launch/rviz2 are not
installable here): arguments documented, names they pass exist, files they name are installed."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from lisa_ros.model.options import PRECISION_CHOICES, QUANTIZATION_BACKEND_CHOICES, QUANTIZATION_CHOICES
from lisa_ros.model.prompts import DEFAULT_EXPLAIN_SUFFIX, DEFAULT_SEGMENT_SUFFIX
from lisa_ros.resources import share_directory
from lisa_ros.ros.launching import (
    ARGUMENT_NAMES,
    CAMERA_ARGUMENTS,
    PARAMETER_ARGUMENTS,
    LaunchArgumentError,
    log_level_arguments,
    parameter_overrides,
    parameters_file_values,
    remapping_rules,
    rviz_config,
)
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


def _declared_arguments() -> dict[str, dict]:
    declared = {}
    for call in _launch_calls("DeclareLaunchArgument"):
        keywords = {k.arg: k.value for k in call.keywords}
        assert "description" in keywords and ast.literal_eval(keywords["description"]).strip()
        declared[ast.literal_eval(call.args[0])] = keywords
    return declared


def test_launch_arguments_are_declared_with_descriptions():
    declared = _declared_arguments()
    # Exactly the arguments the launch rules read (lisa_ros.ros.launching), no more, no fewer.
    assert set(declared) == set(ARGUMENT_NAMES)
    assert {"namespace", "use_sim_time", "log_level", "remappings", "params_file"} <= set(declared)
    # The choices are the model's own (lisa_ros.model.options), not a copy; "" = not given.
    assert _lisa_ros_value(declared["quantization"]["choices"]) == [""] + list(QUANTIZATION_CHOICES)
    assert _lisa_ros_value(declared["precision"]["choices"]) == [""] + list(PRECISION_CHOICES)
    assert _lisa_ros_value(declared["quantization_backend"]["choices"]) == [""] + list(QUANTIZATION_BACKEND_CHOICES)
    assert CHOICES == {"precision": PRECISION_CHOICES, "quantization": QUANTIZATION_CHOICES,
                       "quantization_backend": QUANTIZATION_BACKEND_CHOICES}
    # An argument that sets a parameter is "" unless given, so the parameters file decides.
    for name in list(PARAMETER_ARGUMENTS) + list(CAMERA_ARGUMENTS):
        assert ast.literal_eval(declared[name]["default_value"]) == "", name


def test_launch_starts_the_installed_executable_with_known_parameters():
    (node,) = _launch_calls("LifecycleNode")
    keywords = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(keywords["package"]) == "lisa_ros"
    executable = ast.literal_eval(keywords["executable"])
    assert (SHARE.parent.parent / "lib" / "lisa_ros" / executable).is_file()  # where ros2 run looks
    assert (Path(sys.executable).parent / executable).is_file()  # the console script
    known = {s.name for s in SPECS} | {"use_sim_time"}
    assert {p for names in PARAMETER_ARGUMENTS.values() for p in names} <= known
    assert set(CAMERA_ARGUMENTS) <= {s.name for s in CAMERA_SPECS}


def test_the_parameters_file_wins_unless_an_argument_is_given(tmp_path):
    shipped = parameters_file_values(SHARE / "config" / "lisa_ros.yaml")
    assert shipped["model"] == "embedded" and shipped["camera.image_topic"] == "camera/color/image_raw"
    none_given = {name: "" for name in ARGUMENT_NAMES}
    assert parameter_overrides(none_given, shipped) == {}
    mine = tmp_path / "robot.yaml"
    mine.write_text(yaml.safe_dump({
        "/robot1/lisa_ros": {"ros__parameters": {"quantization": "4bit", "device": "cuda"}},
        "/**": {"ros__parameters": {"model": "/models/LISA-7B-v1", "cameras": ["front", "wrist"], "device": "cpu",
                                    "front": {"image_topic": "front/image"}}},
        "/other/lisa_ros": {"ros__parameters": {"quantization": "8bit"}},
        "lisa_ros": {"ros__parameters": {"quantization": "none"}}}, sort_keys=False))
    values = parameters_file_values(mine, namespace="robot1")
    assert values["model"] == "/models/LISA-7B-v1" and values["quantization"] == "4bit"
    assert values["device"] == "cuda"  # the node's own section beats /** whatever the order, as in rcl
    assert parameters_file_values(mine)["quantization"] == "none"  # no namespace: "lisa_ros" is this node
    assert parameter_overrides(none_given, values) == {}  # model: from the file, not a launch default
    given = dict(none_given, model="embedded", debug="false", use_sim_time="true", image_topic="/cams/front",
                 compressed="true")
    assert parameter_overrides(given, values) == {
        "model": "embedded", "publish_debug_image": False, "publish_markers": False, "use_sim_time": True,
        "front.image_topic": "/cams/front", "front.compressed": True}  # the first of the file's cameras
    assert parameter_overrides(dict(given, camera="wrist"), values)["wrist.image_topic"] == "/cams/front"
    with pytest.raises(LaunchArgumentError, match="not one of"):
        parameter_overrides(dict(given, camera="rear"), values)
    with pytest.raises(LaunchArgumentError, match="true or false"):
        parameter_overrides(dict(none_given, debug="yes"), values)


def test_remappings_log_level_and_rviz_follow_the_arguments():
    assert remapping_rules("") == []
    assert remapping_rules("camera/color/image_raw:=/front/image; camera/color/camera_info:=/front/info") == [
        ("camera/color/image_raw", "/front/image"), ("camera/color/camera_info", "/front/info")]
    with pytest.raises(LaunchArgumentError):
        remapping_rules("camera/color/image_raw=/front/image")
    assert log_level_arguments("") == [] and log_level_arguments("DEBUG") == ["--log-level", "debug"]
    with pytest.raises(LaunchArgumentError):
        log_level_arguments("loud")
    shipped = (SHARE / "config" / "lisa_ros.rviz").read_text()
    config = yaml.safe_load(rviz_config(shipped, "/robot1/", "base_link"))
    topics = [d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"] if "Topic" in d]
    assert "/robot1/lisa_ros/debug_image" in topics and "/robot1/lisa_ros/markers" in topics
    assert all(t.startswith("/robot1/") for t in topics)
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "base_link"
    assert yaml.safe_load(rviz_config(shipped)) == yaml.safe_load(shipped)  # no namespace: unchanged


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


def test_rviz_config_shows_the_debug_image_markers_and_object_points():
    config = yaml.safe_load((SHARE / "config" / "lisa_ros.rviz").read_text())
    displays = {d["Topic"]["Value"]: d for d in config["Visualization Manager"]["Displays"] if "Topic" in d}
    assert displays["/lisa_ros/debug_image"]["Class"] == "rviz_default_plugins/Image"  # moved under a namespace at launch
    assert displays["/lisa_ros/markers"]["Class"] == "rviz_default_plugins/MarkerArray"
    points = displays["/lisa_ros/points"]
    assert points["Class"] == "rviz_default_plugins/PointCloud2" and points["Channel Name"] == "label"  # coloured by id


def test_the_parameters_reference_is_generated_from_the_table():
    """docs/PARAMETERS.md is `lisa-ros parameters`' output: a parameter added to the table (or a
    changed default, range or description) without regenerating the file fails here."""
    from lisa_ros.ros.parameters import reference_markdown

    documented = Path(__file__).resolve().parent.parent / "docs" / "PARAMETERS.md"
    generated = reference_markdown()
    assert all(f"| `{s.name}` |" in generated for s in SPECS)
    assert all(f"| `<name>.{s.name}` |" in generated for s in CAMERA_SPECS)
    assert documented.read_text() == generated, "docs/PARAMETERS.md is stale: lisa-ros parameters > docs/PARAMETERS.md"


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


def test_run_time_model_changes_stay_within_model_roots(tmp_path):
    from lisa_ros.ros.parameters import model_source_allowed

    models = tmp_path / "models"
    (models / "lisa-7b").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (models / "escape").symlink_to(tmp_path / "elsewhere")
    roots = ["embedded", str(models), "xinlai/"]
    assert model_source_allowed("embedded", roots) and model_source_allowed("", roots)
    assert model_source_allowed(str(models / "lisa-7b"), roots)
    assert model_source_allowed("xinlai/LISA-7B-v1", roots)
    assert not model_source_allowed(str(models / ".." / "elsewhere"), roots)  # resolved: outside
    assert not model_source_allowed(str(models / "escape"), roots)  # a link out of the root
    assert not model_source_allowed("evil/LISA-7B-v1", roots)
    assert not model_source_allowed("/etc", ["embedded"])
    assert not model_source_allowed(str(tmp_path / "elsewhere"), ["xinlai/", "embedded"])
    assert not model_source_allowed("embedded-attacker/model", ["embedded"])  # exact, not a prefix
    assert not model_source_allowed("xinlai/../../etc", roots)
    assert not model_source_allowed("embedded" + "x" * 300, ["embedded", "xinlai/"])  # too long to check
    assert not model_source_allowed("~nosuchuser/model", [str(models)])  # cannot expand: refused, no crash


def test_the_start_model_may_always_be_set_again():
    from rclpy.parameter import Parameter

    from lisa_ros.ros.parameters import on_set

    start = {"model": "/data/lisa-7b", "vision_tower": ""}
    assert on_set([Parameter("model", value="/data/lisa-7b")], ["embedded"], start, state="unconfigured").successful
    refused = on_set([Parameter("model", value="/data/other")], ["embedded"], start, state="unconfigured")
    assert not refused.successful and "model_roots" in refused.reason


def test_reload_parameters_change_only_while_unconfigured_and_suffixes_must_suit_the_model():
    from rclpy.parameter import Parameter

    from lisa_ros.ros.parameters import on_set

    quantize = [Parameter("quantization", value="4bit")]
    for state, allowed in (("unconfigured", True), ("error", True), ("inactive", False), ("active", False)):
        result = on_set(quantize, None, None, state=state)
        assert result.successful == allowed, state
        assert allowed or "only change while the node is unconfigured" in result.reason
    asked = []

    def suffix_problem(suffixes: dict) -> str:
        asked.append(suffixes)
        return "too long for this model" if "long" in suffixes.get("segment_suffix", "") else ""

    assert on_set([Parameter("segment_suffix", value=" Please.")], None, None, state="active",
                  suffix_problem=suffix_problem).successful
    refused = on_set([Parameter("segment_suffix", value=" A long one."), Parameter("max_new_tokens", value=64)], None,
                     None, state="active", suffix_problem=suffix_problem)
    assert not refused.successful and refused.reason == "too long for this model"
    assert asked == [{"segment_suffix": " Please."}, {"segment_suffix": " A long one."}]  # the suffixes, when set
    assert on_set([Parameter("max_new_tokens", value=64)], None, None, state="active",
                  suffix_problem=suffix_problem).successful and len(asked) == 2


def test_intrinsics_follow_the_topic_unless_set():
    from lisa_ros.ros.parameters import CameraConfig, validate_value

    def camera(topic, intrinsics="auto"):
        return CameraConfig("front", topic, False, "", "", 0.02, 0.001, True, 0.0, intrinsics)

    assert camera("camera/color/image_rect_color").rectified and not camera("camera/color/image_raw").rectified
    assert camera("camera/color/image_raw", "p").rectified and not camera("camera/image_rect", "k").rectified
    assert validate_value("front.intrinsics", "x") and validate_value("front.intrinsics", "p") is None
