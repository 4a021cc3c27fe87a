"""What ``launch/lisa_ros.launch.py`` gives the node and rviz, as plain functions (``launch`` and
``launch_ros`` are not installable from PyPI; this module is, and is tested without them).

The rule: **the parameters file decides, a launch argument overrides it only when given.** Every
argument that maps to a parameter defaults to "" (not given); :func:`parameter_overrides` passes
only the given ones, after the file, so ``model:`` in a user's YAML is not silently replaced by a
launch default. The camera arguments (``image_topic`` ...) apply to the camera named by the
``camera`` argument, else to the first of the file's ``cameras``.

Topics are relative (``camera/color/image_raw``): under ``namespace:=robot1`` they resolve to
``/robot1/camera/...`` and the node's own to ``/robot1/lisa_ros/...``; ``remappings`` renames any
of them. :func:`rviz_config` rewrites the shipped rviz config for the namespace and fixed frame.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

NODE_NAME = "lisa_ros"
# Launch argument -> the node parameters it sets when given.
PARAMETER_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "vision_tower": ("vision_tower",),
    "quantization": ("quantization",),
    "quantization_backend": ("quantization_backend",),
    "precision": ("precision",),
    "device": ("device",),
    "autostart": ("autostart",),
    "use_sim_time": ("use_sim_time",),
    "target_frame": ("target_frame",),
    "debug": ("publish_debug_image", "publish_markers"),
}
# Launch arguments for one camera's ``<camera>.<name>`` parameters.
CAMERA_ARGUMENTS = ("image_topic", "depth_topic", "camera_info_topic", "compressed")
BOOLEAN_ARGUMENTS = {"autostart", "use_sim_time", "debug", "compressed"}
# Arguments the launch file reads itself (not node parameters).
OTHER_ARGUMENTS = ("params_file", "namespace", "camera", "log_level", "remappings", "rviz", "fixed_frame",
                   "dds_profile")
ARGUMENT_NAMES = tuple(PARAMETER_ARGUMENTS) + CAMERA_ARGUMENTS + OTHER_ARGUMENTS
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


class LaunchArgumentError(ValueError):
    """A launch argument that cannot be used (the message says which and why)."""


def parameters_file_values(path: str | Path, namespace: str = "") -> dict[str, object]:
    """The parameters a ROS 2 parameters file gives this node, flattened to dotted names
    (``camera.image_topic``), as rcl applies them: the ``/**`` section, then the section of the
    node's full name (``/<namespace>/lisa_ros``; without a namespace also ``lisa_ros``), which
    wins whatever the order in the file. Other wildcards are not resolved. A missing or empty
    file gives ``{}``."""
    path = Path(path)
    if not path.is_file():
        return {}
    document = yaml.safe_load(path.read_text()) or {}
    full_name = "/" + "/".join(p for p in (namespace.strip("/"), NODE_NAME) if p)
    own_keys = {full_name} | ({NODE_NAME} if not namespace.strip("/") else set())
    values: dict[str, object] = {}
    for keys in ({"/**"}, own_keys):
        for key, section in document.items():
            if key in keys and isinstance(section, dict):
                values.update(_flatten(section.get("ros__parameters") or {}))
    return values


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _typed(name: str, text: str) -> object:
    if name in BOOLEAN_ARGUMENTS:
        if text.lower() not in ("true", "false"):
            raise LaunchArgumentError(f"{name}:={text!r}: expected true or false")
        return text.lower() == "true"
    return text


def parameter_overrides(arguments: Mapping[str, str], file_values: Mapping[str, object]) -> dict[str, object]:
    """The node parameters set by the *given* launch arguments (value not ""), to pass after the
    parameters file. ``file_values``: :func:`parameters_file_values` (for the camera names).

    Raises LaunchArgumentError for a boolean argument that is not true/false, or a camera argument
    naming a camera the file does not list."""
    overrides: dict[str, object] = {}
    for argument, parameters in PARAMETER_ARGUMENTS.items():
        text = str(arguments.get(argument, "") or "")
        if text:
            overrides.update({parameter: _typed(argument, text) for parameter in parameters})
    cameras = list(file_values.get("cameras") or ["camera"])
    camera = str(arguments.get("camera", "") or "") or cameras[0]
    given = {name: str(arguments.get(name, "") or "") for name in CAMERA_ARGUMENTS}
    if any(given.values()) and camera not in cameras:
        raise LaunchArgumentError(f"camera:={camera!r} is not one of the parameters file's cameras {cameras}")
    overrides.update({f"{camera}.{name}": _typed(name, text) for name, text in given.items() if text})
    return overrides


def remapping_rules(text: str) -> list[tuple[str, str]]:
    """``"from:=to;from2:=to2"`` (``;`` or ``,`` between rules) -> ``[(from, to), ...]``.
    Raises LaunchArgumentError for a rule without ``:=`` or with an empty side."""
    rules = []
    for rule in text.replace(",", ";").split(";"):
        rule = rule.strip()
        if not rule:
            continue
        source, separator, target = rule.partition(":=")
        if not separator or not source.strip() or not target.strip():
            raise LaunchArgumentError(f"remapping {rule!r}: expected from:=to")
        rules.append((source.strip(), target.strip()))
    return rules


def log_level_arguments(level: str) -> list[str]:
    """``--log-level`` ros arguments for ``level`` ("" = the default). Raises LaunchArgumentError."""
    if not level:
        return []
    if level.lower() not in LOG_LEVELS:
        raise LaunchArgumentError(f"log_level:={level!r}: expected one of {', '.join(LOG_LEVELS)}")
    return ["--log-level", level.lower()]


def rviz_config(text: str, namespace: str = "", fixed_frame: str = "") -> str:
    """The rviz config ``text`` (YAML) with every ``/lisa_ros/...`` topic moved under ``namespace``,
    every other absolute camera topic likewise, and the fixed frame set when ``fixed_frame`` is given."""
    config = yaml.safe_load(text)
    manager = config["Visualization Manager"]
    for display in manager.get("Displays", []):
        topic = display.get("Topic", {})
        value = topic.get("Value")
        if isinstance(value, str) and value.startswith("/") and namespace.strip("/"):
            topic["Value"] = "/" + namespace.strip("/") + value
    if fixed_frame:
        manager.setdefault("Global Options", {})["Fixed Frame"] = fixed_frame
    return yaml.safe_dump(config, sort_keys=False)
