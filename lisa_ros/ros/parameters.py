"""The node's parameters: one table, declared with descriptors, validated in one place.

The model parameters (model, vision_tower, precision, quantization, quantization_backend, quantize_heads, device) can
change only while the node is unconfigured (deactivate, cleanup, set, configure: a reload).
Read-only parameters (cameras, queue and cache sizes, autostart) are fixed at start. The others
change at run time with ``ros2 param set`` and are read once per request (:class:`LiveParameters`).
Invalid values are rejected with a reason; an invalid value given at start (wrong type, out of
range) keeps the node alive, unconfigured, saying why.

:data:`SPECS` is the one source of names, defaults, descriptions and ranges; :class:`NodeConfig`
and :class:`LiveParameters` are typed views of it (their fields are checked against it). The
precision/quantization choices, the device rule and the prompt suffixes are the model's own
(:mod:`lisa_ros.model.options`, :mod:`lisa_ros.model.prompts`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.parameter import Parameter

from lisa_ros.model.options import (
    BACKEND_RULE,
    PRECISION_AUTO_RULE,
    PRECISION_CHOICES,
    QUANTIZATION_BACKEND_CHOICES,
    QUANTIZATION_CHOICES,
    GenerationOptions,
    LoadOptions,
    is_valid_device,
)
from lisa_ros.model.tokenization import IM_END_TOKEN, IM_START_TOKEN, IMAGE_PLACEHOLDER, SEG_TOKEN

# Offered unchanged: "auto" precision is resolved by load_lisa, not here.
CHOICES = {
    "precision": PRECISION_CHOICES,
    "quantization": QUANTIZATION_CHOICES,
    "quantization_backend": QUANTIZATION_BACKEND_CHOICES,
}
# What a result may carry of its masks (the result_masks parameter).
RESULT_MASKS_CHOICES = ("instances", "label_image", "none")


@dataclass(frozen=True)
class Spec:
    name: str
    default: object
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None


SPECS = [
    Spec("model", "embedded", "LISA checkpoint: folder or hub id (xinlai/LISA-7B-v1, ...) or 'embedded' (the small "
                              "offline model shipped with lisa_ros); changes need a reload"),
    Spec("vision_tower", "", "CLIP tower folder or hub id; empty = the one in the checkpoint's config.json"),
    Spec("precision", LoadOptions.precision, f"fp32 | bf16 | fp16 | {PRECISION_AUTO_RULE}"),
    Spec("quantization", LoadOptions.quantization, "none | 4bit | 8bit of the language model; SAM always stays 16-bit; 4bit fits a 7B in ~5 GB"),
    Spec("quantization_backend", LoadOptions.quantization_backend, BACKEND_RULE),
    Spec("quantize_heads", LoadOptions.quantize_heads, "also quantize lm_head, mm_projector, text_hidden_fcs (official behaviour)"),
    Spec("device", LoadOptions.device, "auto | cpu | cuda | cuda:N"),
    Spec("max_new_tokens", GenerationOptions.max_new_tokens, "generation limit per answer (tokens)", low=1, high=4096),
    Spec("max_masks", GenerationOptions.max_masks, "most [SEG] masks per answer; more stop generation with a warning (runaway [SEG])",
         low=1, high=256),
    Spec("stop_after_seg", GenerationOptions.stop_after_seg, "without explain: stop generating once the sentence holding [SEG] ends"),
    Spec("draft_tokens", GenerationOptions.draft_tokens, "tokens guessed from earlier answers and checked per forward pass of the language model; "
                            "the same greedy answer (up to rounding) in fewer passes (docs/PERFORMANCE.md); 0 = one token per pass",
         low=0, high=64),
    Spec("segment_suffix", GenerationOptions.segment_suffix, "appended to commands that do not ask for a mask ('' = never); "
                                                   "plain text: prompt syntax (<image>, [SEG], the model's special "
                                                   "tokens) is refused, as is a suffix too long for the context"),
    Spec("explain_suffix", GenerationOptions.explain_suffix, "appended when explain is requested (plain text, as segment_suffix)"),
    Spec("model_roots", ["embedded"], "what a run-time change of model or vision_tower may name: folders (absolute; "
                                      "anything under them), hub id prefixes ending in '/' (e.g. 'xinlai/'), or exact values; "
                                      "the values given at start are always allowed", True),
    Spec("cameras", ["camera"], "names of the camera inputs; each has <name>.image_topic etc.", True),
    Spec("default_camera", "", "camera used when a request names none; empty = the first of `cameras`", True),
    Spec("queue_depth", 2, "requests waiting for the model; more are rejected at once with BUSY", True, 1, 64),
    Spec("max_command_length", 1000, "longest accepted command (characters)", low=1, high=100000),
    Spec("max_image_pixels", 4096 * 4096, "largest accepted image (width x height)", low=1, high=2**31 - 1),
    Spec("max_frame_age", 1.0, "seconds; an older latest frame is refused as STALE_FRAME (0 = no limit)", low=0.0, high=3600.0),
    Spec("min_stamp_wait", 5.0, "seconds a request with min_stamp waits for a frame taken at or after it (then "
                                "STALE_FRAME); such requests wait beside the queue (queue_depth of them), not in "
                                "the worker", low=0.0, high=60.0),
    Spec("request_timeout", 300.0, "seconds a request may take from arrival to answer, queue wait included, when "
                                   "it sets no timeout of its own (then DEADLINE_EXCEEDED)", low=0.1, high=86400.0),
    Spec("session_timeout", 600.0, "seconds of inactivity after which a conversation is forgotten", True, 1.0, 86400.0),
    Spec("max_sessions", 64, "conversations kept at most (oldest dropped first)", True, 1, 10000),
    Spec("frame_cache_size", 4, "encoded frames kept to answer several commands on one frame", True, 0, 64),
    Spec("encode_ahead", False, "while no request waits, encode the default camera's newest frame, so that a request "
                                "about it can skip the image encoding (docs/PERFORMANCE.md); it gets that frame "
                                "when the frame is still the newest or was being encoded when the request came, "
                                "within max_frame_age; any request may wait for one encoding to end, and the CPU "
                                "or GPU works while the node is idle; needs frame_cache_size > 0"),
    Spec("result_masks", "instances", "masks the result carries (the service response, the action result and ~/result): "
                                      "instances (each object's mask and the label image) | label_image (only the "
                                      "label image) | none (boxes, poses and ~/mask only): a 1080p mask is 2 MB"),
    Spec("publish_debug_image", True, "publish ~/debug_image (masks, boxes and answer drawn on the frame)"),
    Spec("publish_markers", True, "publish ~/markers (3D centroid and extent per mask)"),
    Spec("target_frame", "", "frame for the objects' target_pose, ~/detections_3d and the point clouds when a request "
                             "names none, looked up in TF at the image's stamp; on a moving base a fixed frame (odom, "
                             "map); empty = optical frame only"),
    Spec("tf_timeout", 0.2, "seconds a request waits for its target-frame transform (then transform_error and "
                            "no_target_pose)", low=0.0, high=10.0),
    Spec("max_tracks", 2, "~/track goals that may follow at once (each holds an executor thread); more end BUSY",
         True, 0, 16),
    Spec("track_frame_timeout", 2.0, "seconds without a new frame from its camera after which a track ends NO_FRAME",
         low=0.1, high=3600.0),
    Spec("track_correct_period", 1.0, "seconds between a track's model passes (a correction by the mask decoder on "
                                      "a new encoding, or asking again for a lost object); they run while no request "
                                      "waits, and an image encoding takes the CPU or GPU from the per-frame "
                                      "following (0 = as often as the model is free)", low=0.0, high=3600.0),
    Spec("track_reacquire_after", 0.5, "seconds an object stays lost before a track with reacquire asks its command "
                                       "again", low=0.0, high=3600.0),
    Spec("track_lost_timeout", 5.0, "seconds every object of a track without reacquire may stay lost before the "
                                    "track ends NO_TARGET", low=0.0, high=86400.0),
    Spec("autostart", True, "configure and activate at start (no lifecycle manager needed)", True),
]

# Parameters naming what is loaded: run-time changes are limited to model_roots.
MODEL_SOURCE_PARAMETERS = ("model", "vision_tower")
# Parameters the loaded model depends on: changeable only while unconfigured (then configure).
RELOAD_PARAMETERS = {"model", "vision_tower", "precision", "quantization", "quantization_backend", "quantize_heads",
                     "device"}
# Parameters read per request (``ros2 param set`` applies to the next request): the rest.
LIVE_PARAMETERS = [s.name for s in SPECS if not s.read_only and s.name not in RELOAD_PARAMETERS]

CAMERA_SPECS = [
    Spec("image_topic", "image_raw", "colour image topic (sensor_msgs/Image, or CompressedImage with compressed)", True),
    Spec("compressed", False, "subscribe to sensor_msgs/CompressedImage (jpeg/png) instead of Image", True),
    Spec("depth_topic", "", "registered depth topic (16UC1 mm or 32FC1 m; image_transport's compressedDepth "
                            "when the name ends in compressedDepth); empty = no 3D", True),
    Spec("camera_info_topic", "", "CameraInfo of the colour camera; empty = no 3D", True),
    Spec("depth_slop", 0.02, "seconds: largest colour/depth stamp difference accepted as a pair", True, 0.0, 1.0),
    Spec("depth_scale", 0.001, "metres per unit of 16UC1 depth (REP 118: 0.001, millimetres)", True, 1e-6, 1.0),
    Spec("check_depth_frame", True, "ignore depth whose frame_id is not the colour image's (not registered to colour: "
                                    "no 3D rather than wrong 3D); false for a driver that keeps the depth camera's "
                                    "frame_id on depth aligned to colour", True),
    Spec("expected_rate", 0.0, "Hz the colour stream should arrive at; diagnostics WARN outside +-10 % "
                               "(0 = not checked)", True, 0.0, 1000.0),
    Spec("intrinsics", "auto", "k (raw image) | p (rectified image) | auto: p when the image topic is "
                               "rectified (its name holds 'rect'), else k", True),
]
INTRINSICS_CHOICES = ("auto", "k", "p")


def _descriptor(spec: Spec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.low is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))]
    return descriptor


@dataclass(frozen=True)
class CameraConfig:
    """One camera input: its name and the ``<name>.*`` parameters of :data:`CAMERA_SPECS`."""

    name: str
    image_topic: str
    compressed: bool
    depth_topic: str
    camera_info_topic: str
    depth_slop: float  # seconds
    depth_scale: float  # metres per 16UC1 unit
    check_depth_frame: bool  # depth of another frame_id than colour is ignored
    expected_rate: float  # Hz, 0 = not checked
    intrinsics: str  # auto | k | p

    @property
    def compressed_depth(self) -> bool:
        """Whether the depth topic carries compressedDepth (sensor_msgs/CompressedImage): its name
        ends in ``compressedDepth``, as image_transport names it."""
        return self.depth_topic.rstrip("/").endswith("compressedDepth")

    @property
    def rectified(self) -> bool:
        """Whether the image is rectified, so its intrinsics are CameraInfo's P (else K)."""
        return self.intrinsics == "p" or (self.intrinsics == "auto" and "rect" in self.image_topic)


@dataclass(frozen=True)
class NodeConfig:
    """Typed snapshot of the parameters at configure: one field per entry of :data:`SPECS`
    (defaults, descriptions and ranges live there, not here).

    ``cameras`` is the ``cameras`` parameter resolved: one :class:`CameraConfig` per name, in
    the order given.
    """

    model: str
    vision_tower: str
    precision: str
    quantization: str
    quantization_backend: str
    quantize_heads: bool
    device: str
    max_new_tokens: int
    max_masks: int
    stop_after_seg: bool
    draft_tokens: int
    segment_suffix: str
    explain_suffix: str
    model_roots: list
    cameras: tuple[CameraConfig, ...]
    default_camera: str
    queue_depth: int
    max_command_length: int
    max_image_pixels: int
    max_frame_age: float
    min_stamp_wait: float
    request_timeout: float
    session_timeout: float
    max_sessions: int
    frame_cache_size: int
    encode_ahead: bool
    result_masks: str  # instances | label_image | none
    publish_debug_image: bool
    publish_markers: bool
    target_frame: str  # "" = optical frame only
    tf_timeout: float  # seconds
    max_tracks: int
    track_frame_timeout: float  # seconds
    track_correct_period: float  # seconds
    track_reacquire_after: float  # seconds
    track_lost_timeout: float  # seconds
    autostart: bool

    @property
    def default_camera_name(self) -> str:
        return self.default_camera or self.cameras[0].name

    def load_options(self) -> LoadOptions:
        """How the model is loaded (:class:`lisa_ros.model.options.LoadOptions`)."""
        return LoadOptions(precision=self.precision, quantization=self.quantization,
                           quantization_backend=self.quantization_backend, device=self.device,
                           vision_tower=self.vision_tower or None, quantize_heads=self.quantize_heads)


@dataclass(frozen=True)
class LiveParameters:
    """The parameters of :data:`LIVE_PARAMETERS`, read once when a request starts: a
    ``ros2 param set`` applies from the next request on, never half-way through one."""

    max_new_tokens: int
    max_masks: int
    stop_after_seg: bool
    draft_tokens: int
    segment_suffix: str
    explain_suffix: str
    max_command_length: int
    max_image_pixels: int
    max_frame_age: float  # seconds; 0 = no limit
    min_stamp_wait: float  # seconds
    request_timeout: float  # seconds
    encode_ahead: bool
    result_masks: str  # instances | label_image | none
    publish_debug_image: bool
    publish_markers: bool
    target_frame: str  # "" = optical frame only
    tf_timeout: float  # seconds
    track_frame_timeout: float  # seconds
    track_correct_period: float  # seconds
    track_reacquire_after: float  # seconds
    track_lost_timeout: float  # seconds


def default_live(**changes) -> LiveParameters:
    """The run-time parameters at their defaults (:data:`SPECS`), with ``changes``: for code that
    serves requests without a node (tests, benchmarks)."""
    defaults = {spec.name: spec.default for spec in SPECS if spec.name in LIVE_PARAMETERS}
    return LiveParameters(**{**defaults, **changes})


def _declare_one(node, name: str, spec: Spec, problems: list[str]) -> None:
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    try:
        node.declare_parameter(name, spec.default, _descriptor(spec))
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        # A bad value from the YAML file or the command line: keep the default, remember why,
        # and let configure fail with the reason instead of the process dying here.
        kind = type(spec.default).__name__
        problems.append(f"{name}: {exc} (expected {kind}{', e.g. 2.0 not 2' if kind == 'float' else ''})")
        node.declare_parameter(name, spec.default, _descriptor(spec), ignore_override=True)


def declare(node) -> list[str]:
    """Declare every parameter (with per-camera ones for the names in ``cameras``).

    Returns the problems with values given at start (each parameter then keeps its default).
    """
    problems: list[str] = []
    for spec in SPECS:
        _declare_one(node, spec.name, spec, problems)
    for camera in node.get_parameter("cameras").value:
        for spec in CAMERA_SPECS:
            _declare_one(node, f"{camera}.{spec.name}", spec, problems)
    return problems


# Parameters whose text goes into every prompt (the loaded model checks them further:
# lisa_ros.engine.LisaEngine.check_options).
SUFFIX_PARAMETERS = ("segment_suffix", "explain_suffix")
# Prompt syntax of every LISA checkpoint, refused in a suffix before any model is loaded.
PROMPT_SYNTAX = (IMAGE_PLACEHOLDER, SEG_TOKEN, IM_START_TOKEN, IM_END_TOKEN)
# Longest suffix accepted (characters); the loaded model's context may allow less.
MAX_SUFFIX_LENGTH = 1000


def validate_value(name: str, value) -> str | None:
    """Reason why ``value`` is invalid for ``name``, or None. (Ranges are enforced by rclpy.)"""
    if name in SUFFIX_PARAMETERS:
        found = [token for token in PROMPT_SYNTAX if token in str(value)]
        if found:
            return (f"{name} contains {', '.join(map(repr, found))}: prompt syntax, which a suffix added to every "
                    "command cannot carry")
        if len(str(value)) > MAX_SUFFIX_LENGTH:
            return f"{name} has {len(str(value))} characters; at most {MAX_SUFFIX_LENGTH}"
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}"
    if name == "result_masks" and value not in RESULT_MASKS_CHOICES:
        return f"result_masks must be one of {', '.join(RESULT_MASKS_CHOICES)}, got {value!r}"
    if name == "device" and not is_valid_device(str(value)):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    if name == "cameras":
        names = list(value)
        if not names or any(not n or "." in n or "/" in n for n in names) or len(set(names)) != len(names):
            return "cameras must be a non-empty list of distinct names without '.' or '/'"
    if name.endswith(".intrinsics") and value not in INTRINSICS_CHOICES:
        return f"{name} must be one of {', '.join(INTRINSICS_CHOICES)}, got {value!r}"
    if name.endswith(".image_topic") and not value:
        return f"{name} must not be empty"
    return None


def read(node) -> NodeConfig:
    """The current parameters; raises ValueError with every problem found."""
    values = {spec.name: node.get_parameter(spec.name).value for spec in SPECS}
    problems = [p for p in (validate_value(k, v) for k, v in values.items()) if p]
    cameras = []
    for name in values["cameras"] or []:
        camera = {spec.name: node.get_parameter(f"{name}.{spec.name}").value for spec in CAMERA_SPECS}
        problems += [p for p in (validate_value(f"{name}.{k}", v) for k, v in camera.items()) if p]
        cameras.append(CameraConfig(name=name, **camera))
    if values["default_camera"] and values["default_camera"] not in (values["cameras"] or []):
        problems.append(f"default_camera {values['default_camera']!r} is not one of cameras {values['cameras']}")
    if not values["model"]:
        problems.append("model is empty: give a LISA checkpoint folder or hub id")
    if problems:
        raise ValueError("; ".join(problems))
    values["cameras"] = tuple(cameras)
    return NodeConfig(**values)  # a Spec without a field (or the reverse) fails here, loudly


def read_live(node) -> LiveParameters:
    """The run-time parameters now (validated when they were set)."""
    return LiveParameters(**{name: node.get_parameter(name).value for name in LIVE_PARAMETERS})


def model_source_allowed(value: str, roots: list[str]) -> bool:
    """Whether a run-time ``model``/``vision_tower`` value is within ``model_roots``: equal to an
    entry; a path under an absolute folder entry (resolved, so ``..`` and links cannot leave
    it); or, for an entry ending in "/" that is not a path (``xinlai/``), a hub id under it that
    is not a local path. "" (vision_tower from the checkpoint) is always allowed. A value that
    cannot be checked (an over-long name, an unknown ``~user``) is not allowed."""
    if not value or value in roots:
        return True
    try:
        for root in roots:
            if root.startswith(("/", "~")):
                if Path(value).expanduser().resolve().is_relative_to(Path(root).expanduser().resolve()):
                    return True
            elif root.endswith("/") and value.startswith(root) and not value.startswith(("/", ".", "~")) \
                    and ".." not in value.split("/") and not Path(value).exists():
                return True
    except (OSError, RuntimeError, ValueError):
        return False
    return False


def on_set(parameters: list[Parameter], model_roots: list[str] | None, start_values: dict[str, str] | None, *,
           state: str, suffix_problem: Callable[[dict], str] | None = None) -> SetParametersResult:
    """Reject invalid run-time changes with a reason; ``model``/``vision_tower`` outside
    ``model_roots`` too (any node allowed to set parameters could otherwise make this one load
    any file or hub id), except back to the value it had at start (``start_values``); a
    :data:`RELOAD_PARAMETERS` change unless the node's ``state`` is unconfigured or error; new
    prompt suffixes that ``suffix_problem`` ({name: value} -> a reason, "" when the loaded
    model's tokenizer takes them) refuses."""
    for parameter in parameters:
        reason = validate_value(parameter.name, parameter.value)
        if reason is None and parameter.name in MODEL_SOURCE_PARAMETERS and model_roots is not None \
                and parameter.value != (start_values or {}).get(parameter.name) \
                and not model_source_allowed(str(parameter.value), list(model_roots)):
            reason = (f"{parameter.name} {parameter.value!r} is outside model_roots {list(model_roots)} "
                      "(read-only: set it at start to allow more)")
        if reason:
            return SetParametersResult(successful=False, reason=reason)
    suffixes = {p.name: p.value for p in parameters if p.name in SUFFIX_PARAMETERS}
    problem = suffix_problem(suffixes) if suffixes and suffix_problem is not None else ""
    if problem:
        return SetParametersResult(successful=False, reason=problem)
    reload = [p.name for p in parameters if p.name in RELOAD_PARAMETERS]
    if reload and state not in ("unconfigured", "error"):
        return SetParametersResult(successful=False, reason=(
            f"{', '.join(reload)} can only change while the node is unconfigured (deactivate, cleanup, set, configure)"))
    return SetParametersResult(successful=True)


def _markdown_value(value) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{value!r}`" if value else "`''`"
    if isinstance(value, list):
        return f"`{value}`" if value else "`[]`"
    return f"`{value}`"


def _markdown_rows(specs: list[Spec], prefix: str = "") -> list[str]:
    rows = ["| parameter | default | range | changes | description |", "|---|---|---|---|---|"]
    for spec in specs:
        changes = ("fixed at start" if spec.read_only else "reload (deactivate, cleanup, set, configure)"
                   if spec.name in RELOAD_PARAMETERS else "at run time (next request)")
        limits = f"{spec.low:g} .. {spec.high:g}" if spec.low is not None else ""
        description = spec.description.replace("|", "\\|")
        rows.append(f"| `{prefix}{spec.name}` | {_markdown_value(spec.default)} | {limits} | {changes} | {description} |")
    return rows


def reference_markdown() -> str:
    """docs/PARAMETERS.md: every parameter of :data:`SPECS` and :data:`CAMERA_SPECS` with its
    default, range, when it can change and its description (``lisa-ros parameters`` prints it;
    a test keeps the file equal to it)."""
    lines = ["# lisa_ros node parameters", "",
             "Generated from the parameter table (`lisa_ros/ros/parameters.py`) by `lisa-ros parameters`;",
             "do not edit by hand. Set them in a YAML file (`config/lisa_ros.yaml`), with `--ros-args -p",
             "name:=value`, or at run time with `ros2 param set` where the table says so; an invalid value is",
             "refused with its reason and the node keeps running.", "",
             "## Node", "", *_markdown_rows(SPECS), "",
             "## Per camera", "",
             "For each name in `cameras` (default `['camera']`), the parameters `<name>.<parameter>`:", "",
             *_markdown_rows(CAMERA_SPECS, "<name>."), ""]
    return "\n".join(lines)
