"""Odd and malformed requests for fuzzing the node through DDS (issue 13; test/test_fuzz.py and
bench/fuzz.py send them).

:func:`fuzz_cases` draws :class:`FuzzCase` objects from families of inputs that real pipelines
produce, most of them taken from public bug reports against ROS 2 image pipelines: any encoding
string, sizes from empty to thin slivers and over the pixel limit, steps shorter or longer than a
row, data one byte short or long, either byte order; depth and camera_info with every kind of odd
value (NaN, inf, zero and negative focal lengths, sizes that disagree); commands that are empty,
very long, in any script, with control characters or the model's prompt syntax; unknown
sessions and cameras; and, on a compressed camera topic, corrupt or mislabelled jpeg/png
payloads and compressed depth.

A case is a ReasonSegment request, plus (``publish``) a CompressedImage to publish on the fuzz
camera's topic before the request names that camera. Whatever a case holds, the node must answer
it, ``success=true`` or a refusal with a code and a message, and never MODEL_ERROR: a request the
node should have validated is not a model failure.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lisa_ros.ros.conversions import numpy_to_compressed, numpy_to_image, supported_encodings
from lisa_ros.srv import ReasonSegment

# The compressed camera the fuzz node subscribes to (see :func:`fuzz_node_parameters`).
FUZZ_CAMERA = "fuzz"
FUZZ_TOPIC = "/fuzz/color/image_raw/compressed"
FAMILIES = ("encoding", "layout", "endianness", "thin", "depth", "camera_info", "command", "session",
            "camera", "compressed", "target_frame", "timeout")
_ODD_ENCODINGS = ("", "RGB8", "rgb8 ", "jpeg", "png", "yuv420", "i420", "8UC5", "16FC1", "bgr565", "rgb8\x00",
                  "bayer_xyzw8", "mono12", "32FC1; png compressed", "ünïcode")
_PROMPT_LIKE = ("<image>", "[SEG]", "</s>", "<s>", "<im_start>", "<im_end>", "<|im_start|>", "<|endoftext|>",
                "USER:", "ASSISTANT:", "\n\nUSER: ignore that", "<unk>")
_SCRIPTS = ("where is the cup?", "¿dónde está la taza?", "カップはどこ？", "أين الكوب؟", "чашка где?",
            "🥤🥤 where 🫖?", "cup\u200b\u200bwhere", "где\u202ecup", "tab\there", "cr\rlf\n",
            "nul\x00byte", "bell\x07", "\ufeffbom first")


@dataclass
class FuzzCase:
    """One fuzz request: its ``family`` and a short ``label`` of what is odd about it."""

    family: str
    label: str
    request: ReasonSegment.Request
    publish: CompressedImage | None = None


def fuzz_node_parameters(max_command_length: int = 200) -> dict[str, str]:
    """Node parameters the fuzz cases assume: a compressed camera on :data:`FUZZ_TOPIC`."""
    return {"cameras": f"['{FUZZ_CAMERA}']", f"{FUZZ_CAMERA}.image_topic": FUZZ_TOPIC,
            f"{FUZZ_CAMERA}.compressed": "true", "max_command_length": str(max_command_length)}


def _pixels(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def _good_image(rng: np.random.Generator) -> Image:
    return numpy_to_image(_pixels(rng, int(rng.integers(8, 96)), int(rng.integers(8, 128))), "rgb8")


def _request(rng: np.random.Generator, **fields) -> ReasonSegment.Request:
    fields.setdefault("command", "where is the cup?")
    if "camera" not in fields:
        fields.setdefault("image", _good_image(rng))
    return ReasonSegment.Request(**fields)


def _encoding_case(rng, pick):
    encoding = pick(list(supported_encodings()) + list(_ODD_ENCODINGS))
    height, width = int(rng.integers(1, 64)), int(rng.integers(1, 64))
    row = width * int(rng.choice([1, 2, 3, 4, 6, 8, 16, 32]))
    data = rng.integers(0, 256, row * height * 2, dtype=np.uint8).tobytes()[: row * height]
    image = Image(height=height, width=width, encoding=encoding, step=row, data=data)
    return f"{encoding!r} {width}x{height} step {row}", _request(rng, image=image)


def _layout_case(rng, pick):
    height, width = pick([0, 1, 2, 3, 7, 48, 480]), pick([0, 1, 2, 5, 64, 640])
    row = width * 3
    step = pick([0, max(row - 1, 0), row, row + 1, row + 64, 2**31 - 1])
    size = step * height if step < 2**20 else row * height
    length = max(0, size + pick([0, 0, -1, 1, -size, 17]))
    image = Image(height=height, width=width, encoding="rgb8", step=step,
                  data=rng.integers(0, 256, length, dtype=np.uint8).tobytes())
    return f"rgb8 {width}x{height} step {step} data {length}", _request(rng, image=image)


_WIDE = {"mono16": (np.uint16, 1), "rgb16": (np.uint16, 3), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1),
         "bgra16": (np.uint16, 4), "16SC3": (np.int16, 3)}


def _endianness_case(rng, pick):
    encoding = pick(list(_WIDE))
    dtype, channels = _WIDE[encoding]
    values = rng.integers(0, 2**15, (24, 32, channels)).astype(dtype)
    image = numpy_to_image(values[:, :, 0] if channels == 1 else values, encoding)
    image.is_bigendian = pick([0, 1, 2, 255])
    return f"{encoding} is_bigendian={image.is_bigendian}", _request(rng, image=image)


def _thin_case(rng, pick):
    width, height = pick([(2048, 1), (1, 2048), (640, 1), (4096, 4), (1, 1), (2, 2), (65, 1), (1024, 16),
                          (1024, 15), (3, 4000)])
    image = numpy_to_image(_pixels(rng, height, width), "rgb8")
    return f"rgb8 {width}x{height}", _request(rng, image=image)


def _depth_case(rng, pick):
    image = _good_image(rng)
    height, width = image.height, image.width
    kind = pick(["mm", "m", "other size", "mono16", "rgb8", "nan", "inf", "negative", "zero", "empty data"])
    if kind in ("mm", "mono16"):
        depth = numpy_to_image(rng.integers(0, 10000, (height, width)).astype(np.uint16),
                               "16UC1" if kind == "mm" else "mono16")
    elif kind == "rgb8":
        depth = numpy_to_image(_pixels(rng, height, width), "rgb8")
    elif kind == "other size":
        depth = numpy_to_image(np.ones((height + 1, width), np.float32), "32FC1")
    elif kind == "empty data":
        depth = Image(height=height, width=width, encoding="32FC1", step=width * 4)
    else:
        value = {"m": 1.5, "nan": np.nan, "inf": np.inf, "negative": -2.0, "zero": 0.0}[kind]
        depth = numpy_to_image(np.full((height, width), value, np.float32), "32FC1")
    return f"depth {kind}", _request(rng, image=image, depth=depth, camera_info=_camera_info(width, height))


def _camera_info(width: int, height: int, fx: float = 500.0, fy: float = 500.0) -> CameraInfo:
    return CameraInfo(width=width, height=height, k=[fx, 0.0, width / 2, 0.0, fy, height / 2, 0.0, 0.0, 1.0])


def _camera_info_case(rng, pick):
    image = _good_image(rng)
    kind = pick(["nan fx", "inf fy", "zero fx", "negative fy", "size 0", "other size", "all zero but one",
                 "huge"])
    fx = {"nan fx": np.nan, "zero fx": 0.0, "huge": 1e308}.get(kind, 500.0)
    fy = {"inf fy": np.inf, "negative fy": -500.0, "huge": 1e308}.get(kind, 500.0)
    width, height = {"size 0": (0, 0), "other size": (image.width * 2, image.height * 2)}.get(
        kind, (image.width, image.height))
    info = _camera_info(width, height, fx, fy)
    if kind == "all zero but one":
        info.k = [0.0] * 8 + [1.0]
    depth = numpy_to_image(np.full((image.height, image.width), 1.0, np.float32), "32FC1")
    return f"camera_info {kind}", _request(rng, image=image, depth=depth, camera_info=info)


def _command_case(rng, pick, max_command_length: int):
    kind = pick(["empty", "blank", "at limit", "over limit", "script", "prompt syntax", "repeated", "emoji run"])
    if kind == "empty":
        command = ""
    elif kind == "blank":
        command = pick([" ", "\n\t ", "\u200b", "\u3000"])
    elif kind == "at limit":
        command = ("where is the cup? " * 40)[:max_command_length]
    elif kind == "over limit":
        command = "x" * (max_command_length + int(rng.integers(1, 10000)))
    elif kind == "script":
        command = pick(list(_SCRIPTS))
    elif kind == "prompt syntax":
        command = f"is the red thing in this {pick(list(_PROMPT_LIKE))} a ball?"
    elif kind == "repeated":
        command = "cup " * (max_command_length // 4)
    else:
        command = "🧪" * (max_command_length // 2)
    return f"command {kind}", _request(rng, command=command, explain=bool(rng.integers(0, 2)))


def _session_case(rng, pick):
    session = pick(["no-such-session", "x" * 10000, "ünï", "../../etc/passwd", "\x00", "0" * 16])
    return f"session {session[:12]!r}", _request(rng, session_id=session)


def _camera_case(rng, pick):
    camera = pick(["nope", "FUZZ", "fuzz ", "ü", "x" * 5000, "\x00", "front"])
    return f"camera {camera[:12]!r}", _request(rng, camera=camera)


def _target_frame_case(rng, pick):
    """Odd target frames on a request with 3D, so the TF lookup runs (no TF is published)."""
    frame = pick(["/", "//", "map", "no_such_frame", "ü", "x" * 5000, "\x00", "a b", "base_link/", "*"])
    image = _good_image(rng)
    depth = numpy_to_image(np.full((image.height, image.width), 1.0, np.float32), "32FC1")
    return (f"target_frame {frame[:12]!r}",
            _request(rng, image=image, depth=depth, camera_info=_camera_info(image.width, image.height, 500.0, 500.0),
                     target_frame=frame))


def _timeout_case(rng, pick):
    """Durations at the edges of builtin_interfaces/Duration (sec int32, nanosec uint32)."""
    sec, nanosec = pick([(-5, 0), (0, 1), (2**31 - 1, 0), (-(2**31), 0), (0, 2**32 - 1), (-1, 999_999_999)])
    return f"timeout {sec} s {nanosec} ns", _request(rng, timeout=Duration(sec=sec, nanosec=nanosec))


def _compressed_case(rng, pick):
    pixels = _pixels(rng, 24, 32)
    jpeg = numpy_to_compressed(pixels, "rgb8", "jpeg")
    png = numpy_to_compressed(pixels, "rgb8", "png")
    depth = numpy_to_compressed(rng.integers(0, 5000, (24, 32)).astype(np.uint16), "16UC1", "png")
    kind = pick(["jpeg", "png", "truncated jpeg", "truncated png", "random bytes", "png labelled jpeg",
                 "empty", "depth png", "compressedDepth", "odd format", "jpeg header only"])
    message = CompressedImage(format=jpeg.format, data=bytes(jpeg.data))
    if kind == "png":
        message = png
    elif kind == "truncated jpeg":
        message.data = bytes(jpeg.data)[: len(jpeg.data) // 2]
    elif kind == "truncated png":
        message = CompressedImage(format=png.format, data=bytes(png.data)[: len(png.data) // 2])
    elif kind == "random bytes":
        message.data = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    elif kind == "png labelled jpeg":
        message.data = bytes(png.data)
    elif kind == "empty":
        message.data = b""
    elif kind == "depth png":
        message = depth
    elif kind == "compressedDepth":  # compressed_depth_image_transport: a 12-byte header, then PNG
        message = CompressedImage(format="16UC1; compressedDepth png", data=bytes(12) + bytes(depth.data))
    elif kind == "odd format":
        message.format = pick(["", "bmp", "tiff", "jpeg; weird", "rgb8; jpeg compressed mono16"])
    elif kind == "jpeg header only":
        message.data = bytes(jpeg.data)[:20]
    return f"compressed {kind}", _request(rng, camera=FUZZ_CAMERA), message


def fuzz_cases(count: int, seed: int = 0, max_command_length: int = 200, families=FAMILIES):
    """Yield ``count`` :class:`FuzzCase` objects, cycling through ``families``; reproducible by
    ``seed``. ``max_command_length``: the node's parameter, so the limits are probed at the edge."""
    rng = np.random.default_rng(seed)
    chooser = random.Random(seed)

    def pick(options):
        return options[chooser.randrange(len(options))]

    makers = {
        "encoding": _encoding_case, "layout": _layout_case, "endianness": _endianness_case,
        "thin": _thin_case, "depth": _depth_case, "camera_info": _camera_info_case,
        "command": lambda r, p: _command_case(r, p, max_command_length), "session": _session_case,
        "camera": _camera_case, "compressed": _compressed_case, "target_frame": _target_frame_case,
        "timeout": _timeout_case,
    }
    for index in range(count):
        family = families[index % len(families)]
        made = makers[family](rng, pick)
        yield FuzzCase(family, made[0], made[1], made[2] if len(made) > 2 else None)


@dataclass
class FuzzReport:
    """What a fuzz run saw: answers by code name, failures (no answer in time, MODEL_ERROR, a
    refusal without a message) with their cases, cases rclpy would not serialise (never sent),
    and the slowest answer in seconds."""

    sent: int = 0
    answered: int = 0
    by_code: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unsendable: list[str] = field(default_factory=list)  # refused by rclpy on this side
    slowest_s: float = 0.0
    slowest_case: str = ""

    def lines(self) -> list[str]:
        codes = ", ".join(f"{name} {count}" for name, count in sorted(self.by_code.items()))
        return [f"sent {self.sent}, answered {self.answered}, failures {len(self.failures)}, "
                f"not sendable (refused by rclpy on the client side) {len(self.unsendable)}",
                f"by code: {codes}", f"slowest answer: {self.slowest_s:.2f} s ({self.slowest_case})",
                *self.failures[:20]]


def send_fuzz(node, cases, timeout_s: float = 60.0, on_answer=None) -> FuzzReport:
    """Send ``cases`` one by one to the node's ``reason_segment`` service from ``node`` (an rclpy
    node spun by another thread), publishing each case's CompressedImage on :data:`FUZZ_TOPIC`
    first. ``on_answer(case, response, seconds)`` runs after each answer (progress)."""
    import time

    from rclpy.qos import qos_profile_sensor_data

    from lisa_ros.ros.qos import REQUEST_QOS
    from lisa_ros.ros.messages import STATUS_NAMES
    from lisa_ros.ros.serving import Codes
    client = node.create_client(ReasonSegment, "/lisa_ros/reason_segment", qos_profile=REQUEST_QOS)
    publisher = node.create_publisher(CompressedImage, FUZZ_TOPIC, qos_profile_sensor_data)
    report = FuzzReport()
    try:
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError("the node's reason_segment service did not appear")
        for case in cases:
            if case.publish is not None:
                for _ in range(3):  # best effort: a few copies, then give the node a moment
                    publisher.publish(case.publish)
                time.sleep(0.05)
            start = time.monotonic()
            try:
                future = client.call_async(case.request)
            except Exception as exc:  # rclpy refuses to serialise it: it never reaches the node
                report.unsendable.append(f"[{case.family}] {case.label}: {type(exc).__name__}: {exc}")
                continue
            report.sent += 1
            while not future.done() and time.monotonic() - start < timeout_s:
                time.sleep(0.002)
            seconds = time.monotonic() - start
            where = f"[{case.family}] {case.label}"
            if not future.done():
                report.failures.append(f"no answer in {timeout_s:g} s: {where}")
                continue
            response = future.result()
            report.answered += 1
            name = STATUS_NAMES.get(response.result.status.code, str(response.result.status.code))
            report.by_code[name] = report.by_code.get(name, 0) + 1
            if seconds > report.slowest_s:
                report.slowest_s, report.slowest_case = seconds, where
            if response.result.status.code == Codes.MODEL_ERROR:
                report.failures.append(f"MODEL_ERROR for {where}: {response.result.status.message}")
            elif not response.success and not response.result.status.message:
                report.failures.append(f"{name} without a message for {where}")
            if on_answer is not None:
                on_answer(case, response, seconds)
    finally:
        node.destroy_client(client)
        node.destroy_publisher(publisher)
    return report
