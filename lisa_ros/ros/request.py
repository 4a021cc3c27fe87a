"""One ReasonSegment request, top to bottom, on the worker thread.

:class:`RequestHandler` is what :class:`lisa_ros.ros.serving.Server` runs per job:

1. read the run-time parameters once (:class:`~lisa_ros.ros.parameters.LiveParameters`) and
   check the command (empty, too long: INVALID_COMMAND);
2. find the frame (:func:`frame_source`): the request's own image (with its optional depth and
   camera_info), or the latest frame of a configured camera (UNKNOWN_CAMERA, NO_FRAME,
   STALE_FRAME), as a typed :class:`FrameSource`; with ``encode_ahead``, the default camera's
   frame encoded while the node was idle (:meth:`RequestHandler.idle`) when it is about as
   fresh as the one the request would encode (:meth:`RequestHandler.usable_ahead`);
3. decode it (:func:`decode`): RGB, depth in metres and intrinsics, with notes for what is
   missing (INVALID_IMAGE for an image that cannot be decoded or depth of another size);
4. continue or start the session (UNKNOWN_SESSION);
5. encode the frame, or reuse it from the frame cache (key: :attr:`FrameSource.cache_key`; an
   image the encoders cannot take, e.g. thinner than one patch, is INVALID_IMAGE);
6. generate, streaming each object as action feedback the moment its mask is decoded (with its
   id, 3D pose and, when a target frame is asked, its pose in that frame: TF is looked up at the
   image stamp by the first object with 3D, :class:`lisa_ros.ros.tf.TargetTransform`; a failed
   lookup is ``transform_error``, the ``no_target_pose`` flag and a note, not a failure), and text,
   stopping on cancel or deactivate (CANCELLED, NOT_READY); a command the model cannot take as text
   (prompt syntax such as ``<image>``, or too long for the context even without the session's
   history) is INVALID_COMMAND; history that does not fit is trimmed, oldest turns first;
7. build the result (OK with objects, NO_TARGET when the answer holds no [SEG]; ``no_3d`` when an
   object lacks 3D) and publish the outputs (:mod:`lisa_ros.ros.outputs`), with timings per stage
   (:data:`lisa_ros.ros.messages.STAGES`); the message says why there is no target, why 3D or the
   target pose is missing, and what was trimmed to fit the context; the point cloud when the
   request asks for it or someone subscribes to ``~/points``.

A refusal is a :class:`~lisa_ros.ros.serving.RequestError` with its code; anything else that
raises is a model failure, answered by the server.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from lisa_ros.errors import InvalidCommandError, InvalidImageError
from lisa_ros.geometry import Intrinsics
from lisa_ros.msg import Status
from lisa_ros.ros import messages
from lisa_ros.ros.cameras import CameraFrame, CameraInput, stamp_seconds, time_seconds
from lisa_ros.ros.conversions import (
    ImageConversionError,
    compressed_to_rgb8,
    depth_to_meters,
    image_to_rgb8,
    is_empty_image,
)
from lisa_ros.ros.outputs import GoalFeedback, ObjectOutputs, Publishers, Stage, labelled_points
from lisa_ros.ros.parameters import LiveParameters
from lisa_ros.ros.serving import IDLE_POLL_S, Codes, Job, RequestError, past_deadline
from lisa_ros.ros.tf import TargetTransform, TfLookup, history_seconds, wait_until
from lisa_ros.timing import engine_stages


@dataclass(frozen=True)
class FrameSource:
    """Where a request's image comes from, before any decoding.

    ``camera``: the configured camera name, or "" for an image sent with the request.
    ``color``: sensor_msgs/Image, or CompressedImage from a ``compressed`` camera; ``header`` is
    its header, copied to every output. ``depth``: registered depth Image (16UC1 mm or 32FC1 m)
    or None; ``camera_info``: CameraInfo of the colour image or None. ``depth_expected``: the
    camera publishes depth, so a frame without it is worth a note (False for a request image).
    ``cache_key``: the frame cache key, unique per image.
    """

    camera: str
    header: Any
    color: Any
    depth: Any | None
    camera_info: Any | None
    cache_key: Hashable
    depth_expected: bool = False
    depth_scale: float = 0.001  # metres per 16UC1 unit (REP 118: millimetres)
    rectified: bool = False  # intrinsics from CameraInfo's P (rectified image), else K
    notes: tuple[str, ...] = ()  # caveats known before decoding (a clock problem of its stamp)
    check_depth_frame: bool = True  # depth of another frame_id than colour is not registered to it


@dataclass
class DecodedFrame:
    """A decoded :class:`FrameSource`: ``rgb`` ``(H, W, 3)`` uint8; ``depth_m`` ``(H, W)``
    float32 metres with NaN = no return, or None; ``intrinsics`` of the colour image or None;
    ``notes``: why 3D will be missing, for the answer's message (success with a caveat)."""

    rgb: np.ndarray
    depth_m: np.ndarray | None
    intrinsics: Intrinsics | None
    notes: list[str] = field(default_factory=list)
    input_problem: str = ""  # depth or camera_info came but disagreed with the colour image (ignored)


def image_cache_key(image) -> tuple:
    """The frame cache key of a sensor_msgs/Image: a digest of everything that defines its decoded
    pixels (encoding, height, width, step, is_bigendian and the data bytes), so two messages share
    a key only when they decode to the same image. The header (stamp, frame_id) is left out: the
    same pixels re-sent are the same frame."""
    layout = f"{image.encoding}|{image.height}|{image.width}|{image.step}|{int(image.is_bigendian)}|"
    digest = hashlib.blake2b(layout.encode(), digest_size=16)
    digest.update(bytes(image.data))
    return ("request", digest.hexdigest())


def request_source(request) -> FrameSource | None:
    """The image sent with ``request`` (a ReasonSegment request or goal), or None when empty."""
    if is_empty_image(request.image):
        return None
    return FrameSource(
        camera="", header=request.image.header, color=request.image,
        depth=None if is_empty_image(request.depth) else request.depth,
        camera_info=request.camera_info if any(request.camera_info.k) else None,
        cache_key=image_cache_key(request.image))


# The longest a request with min_stamp waits for a new enough camera frame (seconds), unless the
# min_stamp_wait parameter says otherwise.
MIN_STAMP_WAIT_S = 5.0
# How long, once a new enough colour frame has come, a min_stamp request also waits for its
# depth (seconds): depth pipelines deliver some tens of milliseconds after colour.
DEPTH_WAIT_S = 0.25


def latest_frame(cameras: dict[str, CameraInput], name: str, max_frame_age: float) -> tuple[CameraInput, CameraFrame]:
    """Camera ``name`` and its latest frame (:meth:`CameraInput.latest`); ``max_frame_age`` in
    seconds (0 = no limit), against the frame's age (:meth:`CameraInput.frame_age_s`: the node's
    clock, so sim time under use_sim_time; from its stamp, but never younger than its arrival says).

    Raises RequestError UNKNOWN_CAMERA, NO_FRAME or STALE_FRAME.
    """
    camera = cameras.get(name)
    if camera is None:
        raise RequestError(Codes.UNKNOWN_CAMERA, f"unknown camera {name!r}; configured: {', '.join(cameras)}")
    frame = camera.latest()
    if frame is None:
        raise RequestError(Codes.NO_FRAME, f"no frame received yet from camera {name!r}: {camera.silence_reason()}")
    age = camera.frame_age_s(frame)
    if max_frame_age > 0 and age > max_frame_age:
        problem = camera.clock_problem(frame)
        old = f"{age:.2f} s old" if math.isfinite(age) else "from before the clock went back"
        raise RequestError(Codes.STALE_FRAME, f"latest frame of camera {name!r} is {old} (max_frame_age "
                           f"{max_frame_age:g} s){'; ' + problem if problem else ''}")
    return camera, frame


def camera_frame_source(camera: CameraInput, frame: CameraFrame) -> FrameSource:
    """``frame`` of ``camera`` as a :class:`FrameSource` (cache key: :attr:`CameraFrame.cache_key`;
    a clock problem of its stamp is a note of the answer)."""
    problem = camera.clock_problem(frame)
    return FrameSource(
        camera=camera.name, header=frame.color.header, color=frame.color, depth=frame.depth,
        camera_info=frame.camera_info, depth_expected=camera.has_depth_stream(),
        depth_scale=camera.depth_scale, rectified=camera.rectified, cache_key=frame.cache_key,
        notes=(f"clock: {problem}",) if problem else (), check_depth_frame=camera.check_depth_frame)


def min_stamp_seconds(request) -> float:
    """The request's ``min_stamp`` in seconds (0 = none)."""
    min_stamp = getattr(request, "min_stamp", None)
    return time_seconds(min_stamp) if min_stamp is not None else 0.0


def wait_for_min_stamp(request, cameras: dict[str, CameraInput], default_camera: str, deadline: float = math.inf,
                       stopped: Callable[[], str] = lambda: "", poll_s: float = 0.02,
                       wait_s: float = MIN_STAMP_WAIT_S) -> None:
    """For a request about a camera with a nonzero ``min_stamp``: wait until the camera has a
    frame taken at or after it (:attr:`CameraFrame.taken_s`, so a stamp ahead of the node's
    clock cannot pass for a new frame) and, for a camera with depth, until that frame's depth
    has come (at most :data:`DEPTH_WAIT_S` more), polling every ``poll_s``, until ``deadline``
    (monotonic seconds) or ``wait_s`` at most (the ``min_stamp_wait`` parameter: a client clock
    far ahead cannot hold a request long). Called before the request is queued, on its caller's
    thread, so the worker serves other requests meanwhile. Returns at once for a request with
    its own image, without min_stamp, or about a camera that is not configured (the worker
    refuses it).

    ``stopped()``: why to stop waiting ("" to go on): "deactivated" raises NOT_READY, anything
    else CANCELLED. Raises RequestError DEADLINE_EXCEEDED when the deadline ended the wait,
    NO_FRAME when the camera sent nothing at all, and STALE_FRAME when no new enough frame came."""
    min_stamp_s = min_stamp_seconds(request)
    camera = cameras.get(request.camera or default_camera)
    if not min_stamp_s or request_source(request) is not None or camera is None:
        return
    give_up = min(deadline, time.monotonic() + wait_s)
    while True:
        newest = camera.newest()
        if newest is not None and newest.taken_s >= min_stamp_s and math.isfinite(camera.frame_age_s(newest)):
            paired = camera.latest()
            if (not camera.has_depth_stream() or paired.taken_s >= min_stamp_s
                    or camera.now() - newest.received_at > DEPTH_WAIT_S):
                return
        reason = stopped()
        if reason:
            code = Codes.NOT_READY if reason == "deactivated" else Codes.CANCELLED
            raise RequestError(code, f"{reason} while waiting for a frame newer than min_stamp")
        now = time.monotonic()
        if now >= deadline or now >= give_up:
            break
        time.sleep(poll_s)
    if newest is None:
        raise RequestError(Codes.NO_FRAME, f"no frame received yet from camera {camera.name!r}: "
                           f"{camera.silence_reason()}")
    problem = camera.clock_problem(newest)
    latest = f"latest taken at {newest.taken_s:.3f} s{'; ' + problem if problem else ''}"
    if now >= deadline:
        raise RequestError(Codes.DEADLINE_EXCEEDED, f"past its deadline waiting for a frame of camera "
                           f"{camera.name!r} taken at or after min_stamp {min_stamp_s:.3f} s ({latest})")
    raise RequestError(Codes.STALE_FRAME, f"no frame of camera {camera.name!r} taken at or after min_stamp "
                       f"{min_stamp_s:.3f} s arrived within {wait_s:g} s (min_stamp_wait; {latest})")


def frame_source(request, cameras: dict[str, CameraInput], default_camera: str, max_frame_age: float,
                 encoded_ahead: CameraFrame | None = None) -> FrameSource:
    """The request's own image when it has one, else the latest frame of ``request.camera`` (or
    of ``default_camera`` when the request names none). ``encoded_ahead``: a frame of a camera
    already encoded (``encode_ahead``) and judged fresh enough by the caller, taken instead of
    the latest frame for a request about that camera when it was taken at or after
    ``min_stamp`` (with the depth paired when it was encoded, or paired now).

    With a nonzero ``request.min_stamp``, only a frame stamped (own image) or taken (camera
    frame, :attr:`CameraFrame.taken_s`) at or after it; :func:`wait_for_min_stamp` has waited
    for it before the request was queued. Raises RequestError STALE_FRAME when there is none,
    and UNKNOWN_CAMERA/NO_FRAME/STALE_FRAME as :func:`latest_frame`."""
    min_stamp_s = min_stamp_seconds(request)
    own = request_source(request)
    if own is not None:
        if min_stamp_s and stamp_seconds(own.header) < min_stamp_s:
            raise RequestError(Codes.STALE_FRAME, f"the image is stamped {stamp_seconds(own.header):.3f} s, "
                               f"before min_stamp {min_stamp_s:.3f} s")
        return own
    name = request.camera or default_camera
    if (encoded_ahead is not None and encoded_ahead.camera == name and name in cameras
            and encoded_ahead.taken_s >= min_stamp_s):
        camera = cameras[name]
        return camera_frame_source(camera, encoded_ahead if encoded_ahead.depth is not None
                                   else camera.paired(encoded_ahead))
    camera, frame = latest_frame(cameras, name, max_frame_age)
    if min_stamp_s and frame.taken_s < min_stamp_s:
        # the newest frame with a depth frame is too old: the newest colour frame, with its depth if come
        frame = camera.paired(camera.newest())
        if frame.taken_s < min_stamp_s:
            raise RequestError(Codes.STALE_FRAME, f"no frame of camera {name!r} taken at or after min_stamp "
                               f"{min_stamp_s:.3f} s (latest taken at {frame.taken_s:.3f} s)")
    return camera_frame_source(camera, frame)


def decode_color(color, max_pixels: int) -> np.ndarray:
    """A sensor_msgs/Image or CompressedImage as ``(H, W, 3)`` uint8 RGB; RequestError
    INVALID_IMAGE when it cannot be decoded or exceeds ``max_pixels``."""
    try:
        if isinstance(color, CompressedImage):
            return compressed_to_rgb8(color, max_pixels)
        return image_to_rgb8(color, max_pixels)
    except ImageConversionError as exc:
        raise RequestError(Codes.INVALID_IMAGE, f"image: {exc}") from exc


# Relative difference of aspect ratio between camera_info and the image beyond which the
# intrinsics are not scaled to the image but ignored (a resized image keeps its aspect).
ASPECT_TOLERANCE = 0.01


def _disagreement(kind: str, frame_id: str, color) -> str:
    """Why ``kind`` (depth, camera_info) stamped in ``frame_id`` does not belong to ``color``,
    "" when it does or either frame_id is empty (some drivers leave it so)."""
    if frame_id and color.header.frame_id and frame_id != color.header.frame_id:
        why = ("not registered to colour: use the depth aligned to colour, or check_depth_frame false if it is"
               if kind == "depth" else "another camera")
        return f"{kind} ignored: its frame_id {frame_id!r} is not the colour image's {color.header.frame_id!r} ({why}); no 3D"
    return ""


def decode(source: FrameSource, max_pixels: int) -> DecodedFrame:
    """Decode ``source``; ``max_pixels`` bounds width x height of the colour and depth images.

    Raises RequestError INVALID_IMAGE for an image or depth that cannot be decoded. Inputs that
    disagree with the colour image are ignored, so the answer is in 2D, never in wrong 3D, and
    ``input_problem`` says why (a diagnostics warning): depth of another size or frame_id (not
    registered to colour), camera_info of another frame_id or aspect ratio (another camera).
    That, depth without intrinsics, invalid intrinsics, all-invalid depth and missing depth are
    notes.
    """
    decoded = DecodedFrame(decode_color(source.color, max_pixels), None, None, list(source.notes))
    rgb = decoded.rgb
    if source.depth is not None:
        try:
            depth_m = depth_to_meters(source.depth, max_pixels, source.depth_scale)
        except ImageConversionError as exc:
            raise RequestError(Codes.INVALID_IMAGE, f"depth: {exc}") from exc
        problem = _disagreement("depth", source.depth.header.frame_id, source.color) if source.check_depth_frame else ""
        if not problem and depth_m.shape != rgb.shape[:2]:
            problem = (f"depth ignored: it is {depth_m.shape[1]}x{depth_m.shape[0]} but the colour image is "
                       f"{rgb.shape[1]}x{rgb.shape[0]} (use depth registered to colour); no 3D")
        if problem:
            decoded.notes.append(problem)
            decoded.input_problem = problem
        else:
            if not np.isfinite(depth_m).any():
                decoded.notes.append("depth has no valid values: no 3D")
            decoded.depth_m = depth_m
    info = source.camera_info
    if info is not None:
        width, height = info.width or rgb.shape[1], info.height or rgb.shape[0]
        problem = _disagreement("camera_info", info.header.frame_id, source.color)
        aspect = rgb.shape[1] / rgb.shape[0]
        if not problem and abs(width / height - aspect) > ASPECT_TOLERANCE * aspect:
            problem = (f"camera_info ignored: it is for {width}x{height}, another aspect ratio than the colour image's "
                       f"{rgb.shape[1]}x{rgb.shape[0]} (another camera or a cropped image); no 3D")
        if problem:
            decoded.notes.append(problem)
            decoded.input_problem = decoded.input_problem or problem
            info = None
    if info is not None:
        try:
            if source.rectified:
                decoded.intrinsics = Intrinsics.from_p(info.p, width, height)
            else:
                decoded.intrinsics = Intrinsics.from_k(info.k, width, height)
                if any(float(d) != 0.0 for d in info.d):
                    decoded.notes.append("the image is raw (distorted: camera_info d is not zero) and 3D assumes "
                                         "a pinhole: subscribe to the rectified image (image_rect) for exact 3D")
        except ValueError as exc:
            decoded.notes.append(f"camera_info ignored: {exc}")
    if decoded.depth_m is not None and decoded.intrinsics is None and source.camera_info is None:
        decoded.notes.append("depth without camera_info: no 3D")
    if source.depth is None and source.depth_expected:
        decoded.notes.append("no depth frame within depth_slop of the colour frame: no 3D")
    return decoded


# Unicode categories that show nothing: separators (spaces), control, format (U+FEFF byte-order
# mark, zero-width spaces and joiners, bidi marks), surrogates and unassigned code points.
INVISIBLE_CATEGORIES = ("Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Cn")


def _visible(character: str) -> bool:
    return unicodedata.category(character) not in INVISIBLE_CATEGORIES


def checked_command(command: str, max_length: int) -> str:
    """``command`` without the invisible characters at its ends (spaces, a byte-order mark,
    zero-width characters: :data:`INVISIBLE_CATEGORIES`); RequestError INVALID_COMMAND when
    nothing visible is left or it is longer than ``max_length``."""
    visible = [index for index, character in enumerate(command) if _visible(character)]
    if not visible:
        codes = sorted({f"U+{ord(c):04X}" for c in command})[:5]
        shown = f" (only invisible characters: {', '.join(codes)})" if command else ""
        raise RequestError(Codes.INVALID_COMMAND, f"command is empty{shown}")
    command = command[visible[0]:visible[-1] + 1]
    if len(command) > max_length:
        raise RequestError(Codes.INVALID_COMMAND, f"command has {len(command)} characters; the limit "
                           f"(max_command_length) is {max_length}")
    return command


def complete_target_poses(with_3d: list, target: TargetTransform, header):
    """The request's target transform once its answer is complete (``with_3d``: its
    :class:`~lisa_ros.ros.outputs.ObjectOutput` objects with 3D). A lookup that failed while the
    objects streamed is tried once more (TF for the image's stamp may have come since) and the
    objects still without a target pose get one; ``target.error`` says why when there is none.
    None without a target frame, without objects with 3D, or when TF has no transform."""
    if not with_3d:
        return None
    transform = target.get(retry=True)
    if transform is not None:
        for output in with_3d:
            if not output.message.target_pose.header.frame_id:
                output.message.target_pose = messages.target_pose(header, output.geometry, target.frame, transform)
    return transform


def strip_masks(result, result_masks: str) -> None:
    """Keep in ``result`` only the masks the ``result_masks`` parameter asks for: "instances"
    (each object's mask and the label image), "label_image" (each object's mask emptied) or
    "none" (the label image emptied too). An emptied image keeps its header. The action's
    feedback, sent before, keeps each object's mask."""
    if result_masks != "instances":
        for obj in result.objects:
            obj.mask = Image(header=obj.mask.header)
    if result_masks == "none":
        result.instance_labels = Image(header=result.instance_labels.header)


def generation_options(live: LiveParameters):
    """This request's :class:`lisa_ros.engine.GenerationOptions` (never the engine's own)."""
    from lisa_ros.engine import GenerationOptions  # torch: imported once a model is loaded

    return GenerationOptions(max_new_tokens=live.max_new_tokens, max_masks=live.max_masks, stop_after_seg=live.stop_after_seg,
                             draft_tokens=live.draft_tokens, segment_suffix=live.segment_suffix, explain_suffix=live.explain_suffix)


def options_problem(engine, live: LiveParameters) -> str:
    """Why the run-time parameters ``live`` cannot go into ``engine``'s prompts, "" when they
    can (a suffix holding the loaded model's prompt syntax or too long for its context:
    :meth:`lisa_ros.engine.LisaEngine.check_options`)."""
    try:
        engine.check_options(generation_options(live))
    except ValueError as exc:
        return str(exc)
    return ""


class RequestHandler:
    """Serves jobs with one loaded model (built at configure, dropped at cleanup).

    ``engine``: lisa_ros.engine.LisaEngine; ``sessions``/``frame_cache``: lisa_ros.sessions
    SessionStore/FrameCache; ``cameras``: the camera inputs by name; ``default_camera``: used
    when a request names none; ``session_timeout``: seconds, for the UNKNOWN_SESSION message;
    ``publishers``: the node's output topics; ``read_live()``: the run-time parameters now;
    ``tf``: a :class:`lisa_ros.ros.tf.TfLookup` (None: target poses are refused as transform
    errors); ``logger``: for warnings outside a request (None: none); ``next_id()``: a new object
    id, unique within the node's life (the node's counter survives reloads); ``background()``:
    model work to do while no request waits, before encoding ahead (the tracks' corrections);
    returns whether it did any.
    """

    def __init__(self, engine, sessions, frame_cache, cameras: dict[str, CameraInput], default_camera: str,
                 session_timeout: float, publishers: Publishers, read_live: Callable[[], LiveParameters],
                 tf: TfLookup | None = None, logger=None, next_id: Callable[[], int] | None = None,
                 background: Callable[[], bool] | None = None):
        self.engine = engine
        self.sessions = sessions
        self.frame_cache = frame_cache
        self.cameras = cameras
        self.default_camera = default_camera
        self.session_timeout = session_timeout
        self.publishers = publishers
        self.read_live = read_live
        self.tf = tf
        self.logger = logger
        self.next_id = next_id if next_id is not None else functools.partial(next, itertools.count(1))
        self.background = background
        # encode_ahead: the default camera's frame last encoded while idle (in the frame cache
        # under its cache_key, with its depth), the arrival number last considered, and the last
        # encoding's duration (seconds)
        self.ahead: CameraFrame | None = None
        self._ahead_sequence = 0
        self._encode_s = 0.0

    def __call__(self, job: Job, stopping: threading.Event) -> tuple[int, str, dict[str, float]]:
        """Serve ``job``; returns its code (OK, or NO_TARGET for an answer without objects), the
        answer's message (notes, "" when none) and the timings in seconds per stage. ``stopping``:
        a threading.Event set on deactivate."""
        request, engine = job.request, self.engine
        live = self.read_live()
        options = generation_options(live)
        feedback = GoalFeedback(job.goal_handle, job.received_at)
        started = time.monotonic()
        timings = {"queue_wait": started - job.received_at}
        job.result.command = request.command
        if feedback.cancel_requested:
            raise RequestError(Codes.CANCELLED, "cancelled before it started")
        command = checked_command(request.command, live.max_command_length)

        # -- the frame, decoded; the session
        feedback.stage(Stage.STAGE_PREPROCESSING)
        source = frame_source(request, self.cameras, self.default_camera, live.max_frame_age,
                              encoded_ahead=self.usable_ahead(live))
        header = job.result.header = source.header
        frame = decode(source, live.max_image_pixels)
        self.note_inputs(source, frame)
        session_id, history = self._session(request.session_id)
        job.result.session_id = session_id
        timings["preprocess"] = time.monotonic() - started

        # -- encoding (once per frame)
        feedback.stage(Stage.STAGE_ENCODING)
        encode_start = time.monotonic()
        try:
            encoded, cached = self.frame_cache.get_or_encode(source.cache_key, lambda: engine.encode_frame(frame.rgb))
        except InvalidImageError as exc:  # decodable, but not an image the encoders can take
            raise RequestError(Codes.INVALID_IMAGE, f"image: {exc}") from exc
        timings["image_encoding"] = 0.0 if cached else time.monotonic() - encode_start

        # -- generation, objects streamed as their masks are decoded
        feedback.stage(Stage.STAGE_GENERATING)
        if self.tf is not None:
            self.tf.keep_history(history_seconds(live.max_frame_age, live.request_timeout))
        target = TargetTransform(self.tf, request.target_frame.lstrip("/") or live.target_frame, header,
                                 wait_until(job.deadline, live.tf_timeout))
        objects = ObjectOutputs(header, frame.depth_m, frame.intrinsics, self.next_id, target)
        try:
            answer, conversation = engine.answer(
                encoded, command, explain=request.explain, history=history, options=options,
                on_mask=(lambda decoded: feedback.object(objects.get(decoded))) if feedback.streaming else None,
                on_token=feedback.text,
                should_stop=lambda: stopping.is_set() or feedback.cancel_requested or time.monotonic() > job.deadline)
        except InvalidCommandError as exc:  # prompt syntax in the text, or too long for the context
            raise RequestError(Codes.INVALID_COMMAND, str(exc)) from exc
        finally:
            # A frame encoded ahead holds the KV cache of the prompt's start (for a 7B model
            # ~150 MB); kept only until a request has used it, not for the frame's life in the cache.
            drop_prompt_cache = getattr(encoded, "drop_prompt_cache", None)
            if drop_prompt_cache is not None:
                drop_prompt_cache()
        if stopping.is_set():
            raise RequestError(Codes.NOT_READY, "the node was deactivated while this request ran")
        if feedback.cancel_requested:
            raise RequestError(Codes.CANCELLED, "cancelled")
        from lisa_ros.engine import STOP_REQUESTED  # loaded with the model already

        if answer.stop_reason == STOP_REQUESTED and time.monotonic() > job.deadline:
            raise RequestError(Codes.DEADLINE_EXCEEDED, past_deadline(job, "while generating"))
        stages = engine_stages(answer.timings)  # the image was encoded above, timed as the node saw it
        timings["generation"], timings["mask_decoding"] = stages["generation"], stages["mask_decoding"]
        self.sessions.save(session_id, conversation)

        # -- result and outputs
        feedback.stage(Stage.STAGE_POSTPROCESSING)
        post_start = time.monotonic()
        outputs = objects.all(answer.masks)
        with_3d = [o for o in outputs if o.geometry.is_valid]
        if frame.depth_m is not None and outputs and not with_3d:
            frame.notes.append("no mask has valid depth: no 3D")
        transform = complete_target_poses(with_3d, target, header)
        if target.error:
            frame.notes.append(f"no poses in target_frame: {target.error}")
        used_3d = frame.depth_m is not None and frame.intrinsics is not None
        result = messages.segmentation_result(
            header, answer, session_id, [o.message for o in outputs], [m.mask for m in answer.masks],
            frame.rgb.shape[:2], depth_header=source.depth.header if used_3d else None,
            camera_info=messages.camera_info_at(source.camera_info, frame.rgb.shape[1], frame.rgb.shape[0])
            if used_3d else None)
        strip_masks(result, live.result_masks)
        result.no_3d = len(with_3d) < len(outputs)
        result.target_frame, result.transform_error, result.no_target_pose = target.frame, target.error, bool(target.error)
        cloud = None
        if request.point_cloud or self.publishers.points_wanted:
            cloud = messages.point_cloud(header, labelled_points(outputs),
                                         (target.frame, transform) if transform is not None else None)
            if request.point_cloud:
                result.point_cloud = cloud
        code, message = Codes.OK if outputs else Codes.NO_TARGET, "; ".join(answer.caveats + frame.notes)
        result.status = Status(code=code, message=message)  # the published result says it too
        timings["postprocess"] = time.monotonic() - post_start
        timings["total"] = time.monotonic() - job.received_at
        result.timings = messages.stage_timings(timings)
        self.publishers.publish(result, outputs, frame.rgb, answer, live.publish_debug_image, live.publish_markers,
                                cloud)
        job.result = result  # only now: a failure above leaves the client a result without objects
        if job.on_answer is not None and outputs:
            job.on_answer(answer, frame.rgb, encoded, source)
        return code, message, timings

    def usable_ahead(self, live: LiveParameters) -> CameraFrame | None:
        """The frame encoded ahead, when a request now may take it instead of encoding the
        camera's newest frame: it is in the frame cache, it arrived at most one encoding (the
        last one's duration, plus two idle polls) before the newest frame, and the camera is
        alive (its newest frame within ``max_frame_age``; 0 = no limit). The answer then comes
        one encoding sooner and is about a frame no older than the one the request would have
        encoded would be once encoded. None otherwise (e.g. the request waited behind others
        while newer frames came)."""
        ahead, camera = self.ahead, self.cameras.get(self.default_camera)
        if not live.encode_ahead or ahead is None or camera is None or ahead.cache_key not in self.frame_cache:
            return None
        newest = camera.newest()
        if newest is not None and newest.received_at - ahead.received_at > self._encode_s + 2 * IDLE_POLL_S:
            return None
        if live.max_frame_age > 0 and (newest is None or camera.frame_age_s(newest) > live.max_frame_age):
            return None
        return ahead

    @staticmethod
    def waits(job: Job) -> bool:
        """Whether ``job`` may wait for a frame before it is queued (:meth:`before_queue`): a
        request about a camera with a nonzero ``min_stamp``."""
        return bool(min_stamp_seconds(job.request)) and request_source(job.request) is None

    def before_queue(self, job: Job, stopped: Callable[[], str]) -> None:
        """Called on the job's caller thread before it is queued: wait for a frame new enough for
        its ``min_stamp`` (:func:`wait_for_min_stamp`), so the worker serves others meanwhile."""
        feedback_cancelled = (lambda: job.goal_handle is not None and job.goal_handle.is_cancel_requested)
        wait_for_min_stamp(job.request, self.cameras, self.default_camera, job.deadline,
                           stopped=lambda: stopped() or ("cancelled" if feedback_cancelled() else ""),
                           wait_s=self.read_live().min_stamp_wait)

    def idle(self, stopping: threading.Event) -> bool:
        """Called by the worker when no request waits. First one pass of ``background`` work (the
        tracks' corrections), if any is due; else, with ``encode_ahead``: encode the default
        camera's newest frame, if not encoded yet, into the frame cache, so that a request about
        it starts at the language model. One frame per call, so a request arriving meanwhile
        waits one encoding at most. Skipped: a frame already older than ``max_frame_age`` (a
        camera that stopped), or one that cannot be decoded or encoded (the request about it
        says why). Once encoded, the frame is paired with its depth (which has come by then)
        and keeps that depth frame, however many depth frames come during the encoding.
        Returns whether it encoded."""
        if self.background is not None and not stopping.is_set() and self.background():
            return True
        live = self.read_live()
        camera = self.cameras.get(self.default_camera)
        if not live.encode_ahead or self.frame_cache.capacity == 0 or stopping.is_set() or camera is None:
            return False
        frame = camera.latest()
        if frame is None or frame.sequence <= self._ahead_sequence:
            return False
        self._ahead_sequence = frame.sequence
        if live.max_frame_age > 0 and camera.frame_age_s(frame) > live.max_frame_age:
            return False
        if frame.cache_key not in self.frame_cache:  # a request may have encoded it already
            started = camera.now()  # the clock frames arrive by, which usable_ahead compares it with
            camera.pin_depth(frame)  # its depth may come during the encoding and leave the history
            try:
                encoded = self.engine.encode_frame(decode_color(frame.color, live.max_image_pixels), prefill=True)
            except (RequestError, InvalidImageError):
                return False
            self._encode_s = camera.now() - started
            self.frame_cache.store_ahead(frame.cache_key, encoded,
                                         replaces=self.ahead.cache_key if self.ahead is not None else None)
        self.ahead = camera.paired(frame) if frame.depth is None else frame
        return True

    def note_inputs(self, source: FrameSource, frame: DecodedFrame) -> None:
        """Tell the camera the frame came from whether its depth and camera_info agreed with its
        colour image (a camera whose depth is not registered to colour, or whose camera_info is
        another camera's, shows WARN in /diagnostics until they agree)."""
        if source.camera in self.cameras:
            self.cameras[source.camera].input_problem = frame.input_problem

    def _session(self, session_id: str):
        """(session id, conversation so far): a new id and no history for an empty one."""
        if not session_id:
            return self.sessions.new_id(), None
        history = self.sessions.get(session_id)
        if history is None:
            why = self.sessions.forgotten(session_id) or (
                f"unknown (never started here, or forgotten long ago; sessions expire after {self.session_timeout:g} s)")
            raise RequestError(Codes.UNKNOWN_SESSION, f"session {session_id!r} is {why}; send an empty session_id "
                               "to start a new one")
        return session_id, history
