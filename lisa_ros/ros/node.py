"""The lisa_ros lifecycle node: cameras in; ReasonSegment service and action; masks, text, 3D, rviz out.

Threads: image callbacks only store the latest frame (lisa_ros.ros.cameras); every model call
runs on one worker thread fed by a bounded queue (full = BUSY at once); a MultiThreadedExecutor
with reentrant callback groups keeps images, cancels, parameters, diagnostics and lifecycle
transitions flowing during a multi-second inference. One model serves all cameras.

Lifecycle: configure loads the model (a failure leaves the node unconfigured, alive, and says
why); activate subscribes to the cameras and starts the worker; deactivate stops both; cleanup
frees the model and GPU memory. The service and the action exist in every state, so a request
made while the node is not active is answered (NOT_READY) instead of hanging.
"""
from __future__ import annotations

import hashlib
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.msg import SegmentationResult
from lisa_ros.ros import diagnostics, messages, parameters
from lisa_ros.ros.cameras import CameraInput
from lisa_ros.ros.conversions import (
    ImageConversionError,
    compressed_to_rgb8,
    depth_to_meters,
    image_to_rgb8,
    is_empty_image,
    mask_to_image,
)
from lisa_ros.srv import ReasonSegment

Codes = ReasonSegment.Response
Stage = ReasonSegmentAction.Feedback
JOB_TIMEOUT_S = 3600.0
FEEDBACK_PERIOD_S = 0.2  # partial-text feedback at most this often (masks are sent at once)
# Sensor-data QoS (best effort) with depth 1: only the newest frame matters, and a busy executor
# should not turn a backlog of stale 1080p frames into Python objects. Overridable per topic.
INPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                       history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)


@dataclass
class Job:
    """One request on its way through the worker."""

    request: Any  # ReasonSegment.Request or ReasonSegmentAction.Goal (same fields)
    goal_handle: Any = None  # set for action goals
    received_at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    success: bool = False
    code: int = Codes.MODEL_ERROR
    message: str = ""
    result: SegmentationResult = field(default_factory=SegmentationResult)


class RequestError(Exception):
    """A request that cannot be served: code and message go back to the client."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# Outcomes that are the client's input or the node's load, not a model failure.
_REJECTION_CODES = {Codes.INVALID_COMMAND, Codes.INVALID_IMAGE, Codes.NO_FRAME, Codes.STALE_FRAME,
                    Codes.UNKNOWN_CAMERA, Codes.UNKNOWN_SESSION, Codes.BUSY, Codes.NOT_READY, Codes.CANCELLED}
_CODE_NAMES = {getattr(Codes, n): n for n in dir(Codes) if n.isupper() and isinstance(getattr(Codes, n), int)}


class LisaNode(LifecycleNodeMixin, Node):
    """See the module docstring. Node name ``lisa_ros``; everything is under ``~/``."""

    def __init__(self, **kwargs):
        Node.__init__(self, "lisa_ros", **kwargs)
        # Lifecycle services in their own group: a long configure (model loading) must not block
        # parameter services, and transitions stay mutually exclusive with each other.
        self._lifecycle_group = MutuallyExclusiveCallbackGroup()
        LifecycleNodeMixin.__init__(self, enable_communication_interface=True, callback_group=self._lifecycle_group)
        self.parameter_problems = parameters.declare(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.config: parameters.NodeConfig | None = None
        self.engine = None
        self.cameras: dict[str, CameraInput] = {}
        self.stats = diagnostics.RequestStats()
        self.state_name = "unconfigured"
        self.load_error = ""
        self._active = False
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=self.get_parameter("queue_depth").value)
        self._worker: threading.Thread | None = None
        self._serve_lock = threading.Lock()  # _active and queue puts change together
        self._stopping = threading.Event()  # makes a running generation stop on deactivate
        self._subscriptions = []
        self._sessions = None
        self._frame_cache = None
        self._weights_bytes = 0

        self._serving_group = ReentrantCallbackGroup()
        self._input_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.create_service(ReasonSegment, "~/reason_segment", self._on_service, callback_group=self._serving_group)
        self._action_server = ActionServer(
            self, ReasonSegmentAction, "~/reason_segment", execute_callback=self._on_goal_execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT, cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=self._serving_group)

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._result_pub = self.create_publisher(SegmentationResult, "~/result", reliable)
        self._mask_pub = self.create_publisher(Image, "~/mask", reliable)
        self._explanation_pub = self.create_publisher(String, "~/explanation", reliable)
        self._debug_pub = self.create_publisher(Image, "~/debug_image", qos_profile_sensor_data)
        self._markers_pub = self.create_publisher(MarkerArray, "~/markers", reliable)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._timer_group)

        if self.get_parameter("autostart").value:
            # Own group: /diagnostics keeps flowing while the model loads.
            self._autostart_timer = self.create_timer(0.0, self._autostart,
                                                      callback_group=MutuallyExclusiveCallbackGroup())

    def _on_set_parameters(self, changes):
        result = parameters.on_set(changes)
        if result.successful and self.state_name not in ("unconfigured", "error"):
            reload = [c.name for c in changes if c.name in parameters.RELOAD_PARAMETERS]
            if reload:
                result.successful = False
                result.reason = (f"{', '.join(reload)} can only change while the node is unconfigured "
                                 "(deactivate, cleanup, set, configure)")
        return result

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.state_name = "configuring"
        try:
            from lisa_ros.engine import GenerationOptions, LisaEngine
            from lisa_ros.model.loading import load_lisa
            from lisa_ros.sessions import FrameCache, SessionStore

            if self.parameter_problems:
                raise ValueError("invalid parameters: " + "; ".join(self.parameter_problems))
            self.config = parameters.read(self)
            options = self._load_options(self.config)
            self.get_logger().info(f"loading {self.config.model} ({options.precision}, quantization "
                                   f"{options.quantization}, device {options.device}); this can take minutes")
            started = time.monotonic()
            loaded = load_lisa(self.config.model, options)
            self.engine = LisaEngine(loaded, GenerationOptions(
                max_new_tokens=self.config.max_new_tokens, stop_after_seg=self.config.stop_after_seg,
                segment_suffix=self.config.segment_suffix, explain_suffix=self.config.explain_suffix))
        except Exception as exc:  # the node stays alive, unconfigured, and says why
            self.load_error = f"{type(exc).__name__}: {exc}"
            self.state_name = "error"
            self.get_logger().error(f"configure failed: {self.load_error}")
            self._free_model()
            return TransitionCallbackReturn.FAILURE
        self._weights_bytes = loaded.memory_bytes()["total"]
        memory = self._weights_bytes / 2**20
        self.get_logger().info(f"model ready on {loaded.device} in {time.monotonic() - started:.1f} s "
                               f"({memory:.0f} MB of weights)")
        self._sessions = SessionStore(self.config.session_timeout, self.config.max_sessions)
        self._frame_cache = FrameCache(self.config.frame_cache_size)
        self.cameras = {c.name: CameraInput(c.name, c.depth_slop) for c in self.config.cameras}
        self.load_error = ""
        self.state_name = "inactive"
        return TransitionCallbackReturn.SUCCESS

    @staticmethod
    def _load_options(config):
        import torch

        from lisa_ros.model.loading import LoadOptions

        precision = config.precision
        if precision == "auto":
            cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
            quantized = config.quantization != "none"
            precision = ("fp16" if quantized else "bf16") if cuda else ("bf16" if quantized else "fp32")
        return LoadOptions(precision=precision, quantization=config.quantization, device=config.device,
                           vision_tower=config.vision_tower or None, quantize_heads=config.quantize_heads)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            for camera in self.config.cameras:
                self._subscribe(camera)
        except Exception as exc:  # e.g. an invalid topic name: say so, stay inactive
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            self._unsubscribe()
            return TransitionCallbackReturn.FAILURE
        self._stopping.clear()
        self._worker = threading.Thread(target=self._work, name="lisa_ros_worker", daemon=True)
        self._worker.start()
        with self._serve_lock:
            self._active = True
        self.state_name = "active"
        names = ", ".join(f"{c.name} <- {self.resolve_topic_name(c.image_topic)}" for c in self.config.cameras)
        self.get_logger().info(f"active: serving {self.resolve_service_name('~/reason_segment')}; cameras: {names}")
        return super().on_activate(state)

    def _subscribe(self, camera: parameters.CameraConfig) -> None:
        inputs = self.cameras[camera.name]
        qos = dict(qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                   callback_group=self._input_group)
        colour_type = CompressedImage if camera.compressed else Image
        self._subscriptions.append(self.create_subscription(
            colour_type, camera.image_topic, inputs.on_color, INPUT_QOS, **qos))
        if camera.depth_topic:
            # A few depth frames so the one matching a colour stamp can be found.
            self._subscriptions.append(self.create_subscription(
                Image, camera.depth_topic, inputs.on_depth, qos_profile_sensor_data, **qos))
        if camera.camera_info_topic:
            self._subscriptions.append(self.create_subscription(
                CameraInfo, camera.camera_info_topic, inputs.on_camera_info, INPUT_QOS, **qos))

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        self.state_name = "inactive"
        return super().on_deactivate(state)

    def _unsubscribe(self) -> None:
        for subscription in self._subscriptions:
            self.destroy_subscription(subscription)
        self._subscriptions = []

    def _stop_serving(self) -> None:
        with self._serve_lock:
            self._active = False  # no new job is queued after this
        self._stopping.set()  # a running generation stops at its next token
        self._unsubscribe()
        if self._worker is not None:
            self._queue.put(None)  # after the queued jobs: they are answered NOT_READY
            self._worker.join()
            self._worker = None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free_model()
        self.state_name = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        self._free_model()
        self.state_name = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        self._free_model()
        self.state_name = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _free_model(self) -> None:
        self.engine = None
        if self._frame_cache is not None:
            self._frame_cache.clear()
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass

    # ------------------------------------------------------------------ serving
    def _submit(self, job: Job) -> bool:
        with self._serve_lock:
            ready = self._active and self.engine is not None and self._worker is not None and self._worker.is_alive()
            if ready:
                try:
                    self._queue.put_nowait(job)
                    return True
                except queue.Full:
                    busy = True
            else:
                busy = False
        if busy:
            self._finish(job, Codes.BUSY, f"busy: {self._queue.maxsize} request(s) already waiting; try again")
        else:
            self._finish(job, Codes.NOT_READY, f"node is {self.state_name}, not active"
                         + (f" ({self.load_error})" if self.load_error else ""))
        return False

    def _wait(self, job: Job) -> None:
        # The worker always answers; the timeout is a backstop against a bug leaving a caller
        # blocked forever on an executor thread.
        if not job.done.wait(timeout=JOB_TIMEOUT_S):
            job.success, job.code, job.message = False, Codes.MODEL_ERROR, "internal error: no answer from the worker"

    def _on_service(self, request, response):
        job = Job(request)
        if self._submit(job):
            self._wait(job)
        response.success, response.error_code, response.message = job.success, job.code, job.message
        response.result = job.result
        return response

    def _on_goal_execute(self, goal_handle):
        job = Job(goal_handle.request, goal_handle=goal_handle)
        if self._submit(job):
            self._wait(job)
        result = ReasonSegmentAction.Result(success=job.success, error_code=job.code, message=job.message,
                                            result=job.result)
        if job.code == Codes.CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif job.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def _finish(self, job: Job, code: int, message: str = "", timings: dict | None = None) -> None:
        try:
            job.success, job.code, job.message = code == Codes.OK, code, message
            kind = "served" if code == Codes.OK else ("rejected" if code in _REJECTION_CODES else "failed")
            self.stats.record(_CODE_NAMES.get(code, str(code)), kind, timings)
            if code != Codes.OK:
                self.get_logger().warning(f"request refused ({_CODE_NAMES.get(code, code)}): {message}")
        finally:
            job.done.set()  # whatever happens above, the caller gets its answer

    def _work(self) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    break
                try:
                    if not self._active:
                        self._finish(job, Codes.NOT_READY, "node was deactivated before the request ran")
                    else:
                        self._process(job)
                except RequestError as exc:
                    self._finish(job, exc.code, str(exc))
                except Exception as exc:  # the worker never dies: any failure is an answer
                    self._model_failure(job, exc)
                finally:
                    if not job.done.is_set():
                        self._finish(job, Codes.MODEL_ERROR, "internal error: request ended without an answer")
        finally:
            self._drain()

    def _drain(self) -> None:
        """Answer anything still queued when the worker stops."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, Codes.NOT_READY, "node was deactivated before the request ran")

    def _model_failure(self, job: Job, exc: Exception) -> None:
        message = f"model error: {type(exc).__name__}: {exc}"
        try:
            import torch

            if isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
                message = ("out of GPU memory; try quantization 4bit, a smaller image or fewer "
                           f"max_new_tokens ({exc})")
        except Exception:
            pass
        self.get_logger().error(message + "\n" + traceback.format_exc(limit=5))
        self._finish(job, Codes.MODEL_ERROR, message)

    # ------------------------------------------------------------------ one request
    def _live(self, name: str):
        """A parameter that may change at run time: read per request, not at configure."""
        return self.get_parameter(name).value

    def _process(self, job: Job) -> None:
        request = job.request
        engine = self.engine  # one reference for the whole request (cleanup may drop self.engine)
        if engine is None:
            raise RequestError(Codes.NOT_READY, "the model is not loaded")
        options = engine.options
        options.max_new_tokens = self._live("max_new_tokens")
        options.stop_after_seg = self._live("stop_after_seg")
        options.segment_suffix = self._live("segment_suffix")
        options.explain_suffix = self._live("explain_suffix")
        started = time.monotonic()
        timings = {"queue_wait": started - job.received_at}
        job.result.command = request.command
        if job.goal_handle is not None and job.goal_handle.is_cancel_requested:
            raise RequestError(Codes.CANCELLED, "cancelled before it started")

        command = request.command.strip()
        if not command:
            raise RequestError(Codes.INVALID_COMMAND, "command is empty")
        max_length = self._live("max_command_length")
        if len(command) > max_length:
            raise RequestError(Codes.INVALID_COMMAND, f"command has {len(command)} characters; the limit "
                               f"(max_command_length) is {max_length}")

        self._feedback(job, Stage.STAGE_PREPROCESSING)
        source = self._source(request)
        header = source["header"]
        job.result.header = header
        rgb, depth_m, intrinsics, notes = self._decode_source(source)

        history = None
        session_id = request.session_id
        if session_id:
            history = self._sessions.get(session_id)
            if history is None:
                raise RequestError(Codes.UNKNOWN_SESSION, f"session {session_id!r} is unknown or expired "
                                   f"(sessions expire after {self.config.session_timeout:g} s); send an empty "
                                   "session_id to start a new one")
        else:
            session_id = self._sessions.new_id()
        job.result.session_id = session_id
        timings["preprocess"] = time.monotonic() - started

        self._feedback(job, Stage.STAGE_ENCODING)
        encode_start = time.monotonic()
        frame, cached = self._frame_cache.get_or_encode(source["cache_key"], lambda: engine.encode_frame(rgb))
        timings["image_encoding"] = 0.0 if cached else time.monotonic() - encode_start

        self._feedback(job, Stage.STAGE_GENERATING)
        streamed = {"last": 0.0}

        def on_mask(mask) -> None:
            if job.goal_handle is None:
                return
            shape = messages.geometries([mask.mask], depth_m, intrinsics)[0]
            feedback = self._feedback_msg(job, Stage.STAGE_DECODING_MASK)
            feedback.mask_index, feedback.mask = mask.index, mask_to_image(mask.mask, header)
            feedback.score, feedback.box = float(mask.score), messages.region_of_interest(mask.box)
            feedback.centroid = messages.point(shape.centroid)
            job.goal_handle.publish_feedback(feedback)

        def on_token(text: str, count: int) -> None:
            now = time.monotonic()
            if job.goal_handle is not None and now - streamed["last"] >= FEEDBACK_PERIOD_S:
                streamed["last"] = now
                feedback = self._feedback_msg(job, Stage.STAGE_GENERATING)
                feedback.partial_answer, feedback.generated_tokens = text, count
                job.goal_handle.publish_feedback(feedback)

        def should_stop() -> bool:
            return self._stopping.is_set() or (job.goal_handle is not None and job.goal_handle.is_cancel_requested)

        answer, conversation = engine.answer(frame, command, explain=request.explain, history=history,
                                             on_mask=on_mask, on_token=on_token, should_stop=should_stop)
        if self._stopping.is_set():
            raise RequestError(Codes.NOT_READY, "the node was deactivated while this request ran")
        if job.goal_handle is not None and job.goal_handle.is_cancel_requested:
            raise RequestError(Codes.CANCELLED, "cancelled")
        timings["generation"] = answer.timings.get("prefill", 0.0) + answer.timings.get("decode", 0.0)
        timings["mask_decoding"] = answer.timings.get("mask_decode", 0.0)
        self._sessions.save(session_id, conversation)

        self._feedback(job, Stage.STAGE_POSTPROCESSING)
        post_start = time.monotonic()
        shapes = messages.geometries([m.mask for m in answer.masks], depth_m, intrinsics)
        job.result = messages.segmentation_result(header, answer, session_id, shapes)
        if depth_m is not None and answer.masks and not any(s.is_valid for s in shapes):
            notes.append("no mask has valid depth: centroids are NaN")
        self._publish(job.result, header, rgb, answer, shapes)
        timings["postprocess"] = time.monotonic() - post_start
        timings["total"] = time.monotonic() - job.received_at
        for stage, value in timings.items():
            setattr(job.result.timings, stage, float(value))
        self._finish(job, Codes.OK, "; ".join(notes), timings)

    def _source(self, request) -> dict:
        """Where the image comes from: the request, or the latest frame of a camera."""
        if not is_empty_image(request.image):
            digest = hashlib.blake2b(bytes(request.image.data), digest_size=16).hexdigest()
            return {"header": request.image.header, "color": request.image,
                    "depth": None if is_empty_image(request.depth) else request.depth,
                    "camera_info": request.camera_info if any(request.camera_info.k) else None,
                    "cache_key": ("request", digest, request.image.encoding, request.image.width)}
        name = request.camera or self.config.default_camera_name
        camera = self.cameras.get(name)
        if camera is None:
            raise RequestError(Codes.UNKNOWN_CAMERA, f"unknown camera {name!r}; configured: "
                               f"{', '.join(self.cameras)}")
        frame = camera.latest()
        if frame is None:
            raise RequestError(Codes.NO_FRAME, f"no frame received yet from camera {name!r}; check the topic "
                               f"and QoS (the node subscribes with sensor-data QoS, best effort)")
        age = time.monotonic() - frame.received_at
        max_age = self._live("max_frame_age")
        if max_age > 0 and age > max_age:
            raise RequestError(Codes.STALE_FRAME, f"latest frame of camera {name!r} is {age:.2f} s old "
                               f"(max_frame_age {max_age:g} s)")
        return {"header": frame.color.header, "color": frame.color, "depth": frame.depth,
                "camera_info": frame.camera_info, "depth_expected": bool(camera.has_depth_stream()),
                # The arrival number, not the stamp: drivers that stamp 0 or a looping bag
                # repeat stamps, and a cache keyed on them would answer about an older image.
                "cache_key": (name, frame.sequence)}

    def _decode_source(self, source: dict):
        from lisa_ros.geometry import Intrinsics

        limit = self._live("max_image_pixels")
        try:
            color = source["color"]
            rgb = compressed_to_rgb8(color, limit) if isinstance(color, CompressedImage) else image_to_rgb8(color, limit)
        except ImageConversionError as exc:
            raise RequestError(Codes.INVALID_IMAGE, f"image: {exc}") from exc
        notes, depth_m, intrinsics = [], None, None
        if source["depth"] is not None:
            try:
                depth_m = depth_to_meters(source["depth"], limit)
            except ImageConversionError as exc:
                raise RequestError(Codes.INVALID_IMAGE, f"depth: {exc}") from exc
            if depth_m.shape != rgb.shape[:2]:
                raise RequestError(Codes.INVALID_IMAGE, f"depth is {depth_m.shape[1]}x{depth_m.shape[0]} but the "
                                   f"colour image is {rgb.shape[1]}x{rgb.shape[0]}: use depth registered to colour")
            if not np.isfinite(depth_m).any():
                notes.append("depth has no valid values: centroids are NaN")
        info = source["camera_info"]
        if info is not None:
            try:
                intrinsics = Intrinsics.from_k(info.k, info.width or rgb.shape[1], info.height or rgb.shape[0])
            except ValueError as exc:
                notes.append(f"camera_info ignored: {exc}")
        if depth_m is not None and intrinsics is None:
            notes.append("depth without camera_info: centroids are NaN")
        if source["depth"] is None and source.get("depth_expected"):
            notes.append("no depth frame within depth_slop of the colour frame: centroids are NaN")
        return rgb, depth_m, intrinsics, notes

    def _feedback_msg(self, job: Job, stage: str):
        feedback = ReasonSegmentAction.Feedback(stage=stage, mask_index=-1)
        feedback.elapsed = time.monotonic() - job.received_at
        feedback.centroid = messages.nan_point()
        return feedback

    def _feedback(self, job: Job, stage: str) -> None:
        if job.goal_handle is not None:
            job.goal_handle.publish_feedback(self._feedback_msg(job, stage))

    def _publish(self, result, header, rgb, answer, shapes) -> None:
        self._result_pub.publish(result)
        union = np.zeros(rgb.shape[:2], bool)
        for mask in answer.masks:
            union |= mask.mask
        self._mask_pub.publish(mask_to_image(union, header))
        self._explanation_pub.publish(String(data=result.explanation))
        if self.get_parameter("publish_debug_image").value:
            self._debug_pub.publish(messages.debug_image(header, rgb, answer))
        if self.get_parameter("publish_markers").value:
            labels = [f"#{m.index} {m.score:.2f}" for m in answer.masks]
            self._markers_pub.publish(messages.markers(header, shapes, labels))

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        try:
            now = time.monotonic()
            model_info = {"model": self.get_parameter("model").value}
            memory = {}
            engine = self.engine
            if engine is not None:
                loaded = engine.loaded
                model_info.update(device=str(loaded.device), precision=str(loaded.dtype).replace("torch.", ""),
                                  quantization=loaded.options.quantization)
                memory = {"weights": self._weights_bytes}
                if loaded.device.type == "cuda":
                    import torch

                    memory["gpu_allocated"] = torch.cuda.memory_allocated(loaded.device)
                    memory["gpu_peak"] = torch.cuda.max_memory_allocated(loaded.device)
            if self.load_error:
                model_info["error"] = self.load_error
            model_info["queue"] = f"{self._queue.qsize()}/{self._queue.maxsize}"
            cameras = []
            for name, camera in self.cameras.items():
                latency = camera.callback_latency.summary_ms()
                cameras.append({"name": name, "age_s": camera.age_s(), "rate_hz": camera.color_rate.rate_hz(now),
                                "depth_rate_hz": camera.depth_rate.rate_hz(now), "frames": camera.frames_received,
                                "callback_latency_mean_ms": latency["mean"], "callback_latency_p99_ms": latency["p99"],
                                "callback_latency_max_ms": latency["max"], "max_age_s": self._live("max_frame_age")})
            self._diagnostics_pub.publish(diagnostics.build(
                self.get_fully_qualified_name().lstrip("/"), self.get_clock().now().to_msg(), self.state_name, model_info, self.stats,
                cameras, memory))
        except Exception as exc:  # diagnostics must never take the node down
            self.get_logger().warning(f"diagnostics failed: {exc}", throttle_duration_sec=30.0)


def main(args: list[str] | None = None, node_class: type[LisaNode] = LisaNode) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = node_class()
    threads = max(4, node.get_parameter("queue_depth").value + 4)
    executor = MultiThreadedExecutor(num_threads=threads)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_serving()
        node._free_model()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
