"""The ``~/track`` action and the ``~/tracks`` topic: reason once, then follow the objects on every frame.

One goal's path (:meth:`Tracks.on_goal`, on its executor thread for the goal's whole life):

1. refusals first: node not active (NOT_READY), ``max_tracks`` tracks already running (BUSY),
   an unknown camera (UNKNOWN_CAMERA), an empty command (INVALID_COMMAND);
2. the camera's frames are collected from now on (:meth:`CameraInput.add_listener`), so that
   none is missed while the model reasons;
3. the first answer is an ordinary ReasonSegment request through the server's queue (the same
   refusals, BUSY when the queue is full, NO_FRAME, STALE_FRAME, and the ~/result etc. of any
   answer); an answer without objects ends the goal NO_TARGET. On the worker, right after the
   answer, a :class:`~lisa_ros.tracking.follow.Follower` starts from it, corrects the masks on
   the answer's own encoding and steps through the frames that came meanwhile;
4. then every new frame (the newest, when several came) is decoded with its depth and camera_info,
   followed (milliseconds, no model), and sent as feedback and on ``~/tracks``
   (``TrackedObjects``: the frame's header, each object's state, mask, box, score, pose and
   target pose, with the ids of the first answer);
5. the model's share (SAM corrections, re-asking the command for a lost object when ``reacquire``)
   runs on the worker while no request waits (:meth:`Tracks.model_work`), so reasoning requests
   are served first and wait at most one such pass (an image encoding, or a whole answer when a
   lost object is asked for again); a failure there stops the goal's corrections, not the goal;
6. the goal ends when its duration is over (OK), on cancel (CANCELLED), when the node is
   deactivated (NOT_READY), when the camera sends nothing for ``track_frame_timeout`` (NO_FRAME),
   on a frame of another size, or BAD_FRAMES_LIMIT in a row that cannot be decoded (one is
   skipped) (INVALID_IMAGE), when every object
   has been lost for ``track_lost_timeout`` without ``reacquire`` (NO_TARGET), or on a failure
   (MODEL_ERROR): the result's status says which, with the first answer, the frame count and rate.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections import deque
from types import SimpleNamespace
from typing import Callable

from lisa_ros.action import Track as TrackAction
from lisa_ros.msg import Status, TrackedObject, TrackedObjects
from lisa_ros.ros import messages
from lisa_ros.ros.cameras import CameraFrame
from lisa_ros.ros.messages import duration, duration_seconds
from lisa_ros.ros.outputs import ObjectOutputs
from lisa_ros.ros.request import camera_frame_source, decode, decode_color
from lisa_ros.ros.serving import Codes, RequestError, Server, free_after_out_of_memory
from lisa_ros.ros.tf import TargetTransform
from lisa_ros.srv import ReasonSegment

STATE_CODES = {"tracking": TrackedObject.TRACKING, "occluded": TrackedObject.OCCLUDED,
               "uncertain": TrackedObject.UNCERTAIN, "lost": TrackedObject.LOST}
POLL_S = 0.05  # how often a track checks cancel, deactivation and its duration while no frame comes
CATCH_UP_FRAMES = 60  # frames kept while the first answer is reasoned (thinned out beyond)
DEPTH_WAIT_S = 0.05  # how long a followed frame waits for its depth frame
BAD_FRAMES_LIMIT = 15  # frames in a row that cannot be decoded before a track ends INVALID_IMAGE


class _Goal:
    """One running track: its goal, camera, follower and the frames not yet followed."""

    def __init__(self, track_id: int, goal_handle, camera, command: str):
        self.track_id = track_id
        self.goal_handle = goal_handle
        self.camera = camera
        self.command = command
        self.follower = None  # lisa_ros.tracking.follow.Follower once the first answer is in
        self.node_ids: dict[int, int] = {}  # answer mask index -> SegmentedObject id
        self.inbox: deque[CameraFrame] = deque()
        self.lock = threading.Lock()  # the inbox: the subscription's thread adds, the goal's takes
        self.arrived = threading.Event()
        self.last_model_pass = 0.0
        self.model_problem = ""  # why the model's work for this track stopped, if it did

    def on_frame(self, frame: CameraFrame) -> None:
        """A new frame (the subscription's thread). Before the first answer all are kept, for the
        catch-up: beyond CATCH_UP_FRAMES every other one is dropped, the oldest kept (the flow from
        the answer's frame must start close to it); after it, only the newest matters."""
        from lisa_ros.tracking.follow import keep_thinned  # with the model stack, loaded by now

        with self.lock:
            if self.follower is None:
                keep_thinned(self.inbox, frame, CATCH_UP_FRAMES)
            else:
                self.inbox.clear()
                self.inbox.append(frame)
        self.arrived.set()

    def take(self) -> list[CameraFrame]:
        with self.lock:
            frames, self.inbox = list(self.inbox), deque()
        return frames


class _CancelOnly:
    """What the first answer's job sees of the track goal: its cancel, no feedback (a Track goal
    carries no ReasonSegment feedback)."""

    def __init__(self, goal_handle):
        self._goal_handle = goal_handle

    @property
    def is_cancel_requested(self) -> bool:
        return self._goal_handle.is_cancel_requested

    def publish_feedback(self, _feedback) -> None:
        pass


class Tracks:
    """The track action server's callbacks (see the module docstring).

    ``server``: the node's request server (the first answer goes through its queue);
    ``handler()``: the RequestHandler while configured, else None; ``read_live()``: the run-time
    parameters; ``tf``: the node's TfLookup; ``publish(msg)``: sends a TrackedObjects on
    ``~/tracks``; ``serving()``: whether the node is active; ``max_tracks``: how many goals may
    follow at once."""

    def __init__(self, server: Server, handler: Callable, read_live: Callable, tf, publish: Callable,
                 serving: Callable[[], bool], max_tracks: int, logger):
        self._server, self._handler, self._read_live, self._tf = server, handler, read_live, tf
        self._publish, self._serving, self._max_tracks, self._logger = publish, serving, max_tracks, logger
        self._goals: dict[int, _Goal] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._stopping.clear()

    def stop(self) -> None:
        """End every running track (NOT_READY): the node is being deactivated."""
        self._stopping.set()
        for goal in list(self._goals.values()):
            goal.arrived.set()

    @property
    def running(self) -> int:
        return len(self._goals)

    # ------------------------------------------------------------------ the worker's share
    def model_work(self) -> bool:
        """One model pass (a correction, or re-asking for a lost object) for the track that had
        one longest ago, at most one per ``track_correct_period`` per track; called by the worker
        while no request waits. Whether it did one."""
        period = self._read_live().track_correct_period
        now = time.monotonic()
        with self._lock:
            ready = [g for g in self._goals.values() if g.follower is not None and g.follower.tracker is not None
                     and not g.model_problem and now - g.last_model_pass >= period]
        if not ready:
            return False
        goal = min(ready, key=lambda g: g.last_model_pass)
        goal.last_model_pass = time.monotonic()
        try:
            return bool(goal.follower.model_pass())
        except Exception as exc:  # the track goes on without the model; the worker goes on
            hint = free_after_out_of_memory(exc)
            goal.model_problem = (f"corrections stopped after a model error: {hint + '; ' if hint else ''}"
                                  f"{type(exc).__name__}: {exc}")
            self._logger.error(goal.model_problem + "\n" + traceback.format_exc(limit=5))
            return False

    # ------------------------------------------------------------------ one goal
    def on_goal(self, goal_handle):
        """The Track action's execute callback (see the module docstring)."""
        request = goal_handle.request
        result = TrackAction.Result()
        started = time.monotonic()
        goal = None
        try:
            goal = self._admit(goal_handle)
            self._first_answer(goal, result, started)
            code, message = self._follow(goal, result, started)
        except RequestError as exc:
            code, message = exc.code, str(exc)
        except Exception as exc:  # never kill the node: the goal ends with the reason
            code, message = Codes.MODEL_ERROR, f"internal error while tracking: {type(exc).__name__}: {exc}"
            self._logger.error(message + "\n" + traceback.format_exc(limit=5))
        finally:
            if goal is not None:
                goal.camera.remove_listener(goal.on_frame)
                with self._lock:
                    self._goals.pop(goal.track_id, None)
        result.status = Status(code=code, message=message)
        if code == Codes.CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif code in (Codes.OK, Codes.NO_TARGET) and result.frames:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        line = (f"track {goal.track_id if goal else '-'} ended ({messages.STATUS_NAMES.get(code, code)}): {message} "
                f"[{request.command[:80]!r}]")
        if code in (Codes.OK, Codes.CANCELLED):  # one severity per call site (rclpy's rule)
            self._logger.info(line)
        else:
            self._logger.warning(line)
        return result

    def _admit(self, goal_handle) -> _Goal:
        request = goal_handle.request
        handler = self._handler()
        if handler is None or not self._serving():
            raise RequestError(Codes.NOT_READY, "node is not active")
        name = request.camera or handler.default_camera
        camera = handler.cameras.get(name)
        if camera is None:
            raise RequestError(Codes.UNKNOWN_CAMERA, f"unknown camera {name!r}; configured: {', '.join(handler.cameras)}")
        if not request.command.strip():
            raise RequestError(Codes.INVALID_COMMAND, "the command is empty")
        with self._lock:
            if len(self._goals) >= self._max_tracks:
                raise RequestError(Codes.BUSY, f"busy: {self._max_tracks} track(s) already running (max_tracks)")
            goal = _Goal(next(self._ids), goal_handle, camera, request.command)
            self._goals[goal.track_id] = goal
        camera.add_listener(goal.on_frame)
        return goal

    def _first_answer(self, goal: _Goal, result, started: float) -> None:
        """The first answer, through the queue; on the worker right after it, the follower starts."""
        from lisa_ros.tracking.follow import FollowOptions, Follower, NoTargetError  # with the model stack

        request = goal.goal_handle.request
        live = self._read_live()
        feedback = TrackAction.Feedback(stage=TrackAction.Feedback.STAGE_REASONING, elapsed=duration(0.0))
        feedback.tracks = TrackedObjects(track_id=goal.track_id, command=goal.command, camera=goal.camera.name)
        goal.goal_handle.publish_feedback(feedback)
        job = self._server.job(ReasonSegment.Request(command=request.command, camera=goal.camera.name,
                                                      target_frame=request.target_frame), _CancelOnly(goal.goal_handle))
        stopping = self._stopping

        def on_answer(answer, rgb, encoded, source):
            # On the worker thread: the model is free here, and the answer's encoding is at hand.
            options = FollowOptions(reacquire=request.reacquire, reacquire_after_s=live.track_reacquire_after)
            follower = Follower(self._handler().engine, request.command, options,
                                should_stop=lambda: stopping.is_set() or goal.goal_handle.is_cancel_requested)
            sequence = source.cache_key[1] if source.camera else 0
            frames = goal.take()
            answered = [f for f in frames if f.sequence == sequence]
            # The answer's frame arrived before the goal listened when it is not among them.
            stamp = answered[0].received_at if answered else time.monotonic() - answer.timings.get("total", 0.0)
            for frame in [f for f in frames if f.sequence > sequence]:
                try:
                    follower.keep(decode_color(frame.color, live.max_image_pixels), frame.received_at)
                except RequestError:  # the track loop meets it again, if it is the newest
                    pass
            try:
                follower.begin(answer, rgb, stamp, encoded)
            except NoTargetError:  # every mask empty: the goal ends NO_TARGET
                return
            with goal.lock:
                goal.follower = follower

        job.on_answer = on_answer
        self._server.serve(job)
        result.answer = job.result
        if job.code != Codes.OK:
            raise RequestError(job.code, f"first answer: {job.message or 'no objects'}")
        if goal.follower is None:
            raise RequestError(Codes.NO_TARGET, f"first answer: nothing to follow ({job.message})")
        goal.node_ids = {index: obj.id for index, obj in enumerate(job.result.objects)}

    def _decode(self, frame: CameraFrame, live, camera):
        """``frame`` decoded with the depth and camera_info paired to it (rgb, depth in metres,
        intrinsics); depth comes a little after colour, so a camera with a depth stream is given
        up to DEPTH_WAIT_S for it. RequestError INVALID_IMAGE when it cannot be decoded."""
        paired = camera.paired(frame)
        if paired.depth is None and camera.has_depth_stream():
            until = time.monotonic() + DEPTH_WAIT_S
            while paired.depth is None and time.monotonic() < until:
                time.sleep(0.005)
                paired = camera.paired(frame)
        return decode(camera_frame_source(camera, paired), live.max_image_pixels)

    def _follow(self, goal: _Goal, result, started: float) -> tuple[int, str]:
        """Follow the objects frame by frame until the goal ends; returns its code and message."""
        request = goal.goal_handle.request
        length = duration_seconds(request.duration)
        following_since = time.monotonic()
        last_frame_at = time.monotonic()
        all_lost_since = None
        bad_frames = 0
        while True:
            live = self._read_live()
            now = time.monotonic()
            if goal.goal_handle.is_cancel_requested:
                return Codes.CANCELLED, "cancelled"
            if self._stopping.is_set() or not self._serving():
                return Codes.NOT_READY, "the node was deactivated while tracking"
            if length > 0 and now - following_since >= length:
                note = f"; {goal.model_problem}" if goal.model_problem else ""
                return Codes.OK, f"followed for its duration ({length:g} s){note}"
            if now - last_frame_at > live.track_frame_timeout:
                return Codes.NO_FRAME, (f"camera {goal.camera.name!r} sent no frame for {live.track_frame_timeout:g} s "
                                        f"(track_frame_timeout): {goal.camera.silence_reason()}")
            if not goal.arrived.wait(POLL_S):
                continue
            goal.arrived.clear()
            frames = goal.take()
            if not frames:
                continue
            frame = frames[-1]
            last_frame_at = time.monotonic()
            try:
                decoded = self._decode(frame, live, goal.camera)
                bad_frames = 0
            except RequestError as exc:  # skipped; a camera that sends only such frames ends it
                bad_frames += 1
                if bad_frames >= BAD_FRAMES_LIMIT:
                    return Codes.INVALID_IMAGE, (f"{bad_frames} frames in a row of camera {goal.camera.name!r} could "
                                                 f"not be used: {exc}")
                continue
            try:
                objects = goal.follower.step(decoded.rgb, frame.received_at)
            except ValueError as exc:
                return Codes.INVALID_IMAGE, f"camera {goal.camera.name!r}: {exc}"
            message = self._message(goal, frame, decoded, objects, request.target_frame or live.target_frame)
            result.frames += 1
            result.last = message
            span = time.monotonic() - following_since
            result.rate_hz = float(result.frames / span) if span > 0 else 0.0
            goal.goal_handle.publish_feedback(TrackAction.Feedback(
                stage=TrackAction.Feedback.STAGE_TRACKING, elapsed=duration(time.monotonic() - started), tracks=message))
            self._publish(message)
            lost = all(o.state == "lost" for o in objects)
            all_lost_since = (all_lost_since or time.monotonic()) if lost else None
            if (lost and not request.reacquire and all_lost_since is not None
                    and time.monotonic() - all_lost_since >= live.track_lost_timeout):
                reasons = "; ".join(sorted({o.reason for o in objects}))
                return Codes.NO_TARGET, (f"every object lost for {live.track_lost_timeout:g} s (track_lost_timeout), "
                                         f"reacquire off: {reasons}")

    def _message(self, goal: _Goal, frame: CameraFrame, decoded, objects, target_frame: str) -> TrackedObjects:
        """The TrackedObjects of one followed frame, 3D and target poses as for answers."""
        message = tracked_objects(frame.color.header, decoded, objects, goal.node_ids, self._tf, target_frame)
        message.track_id, message.command, message.camera = goal.track_id, goal.command, goal.camera.name
        message.latency = duration(time.monotonic() - frame.received_at)
        return message


def tracked_objects(header, decoded, objects, node_ids: dict[int, int], tf, target_frame: str) -> TrackedObjects:
    """The TrackedObjects of one followed frame (``header``: its colour header; ``decoded``: its
    :class:`~lisa_ros.ros.request.DecodedFrame`; ``objects``: the follower's step; ``node_ids``:
    answer mask index -> the SegmentedObject id the first answer gave it), 3D from the frame's
    depth and target poses in ``target_frame`` through ``tf`` as for answers. track_id, command,
    camera and latency are the caller's."""
    ids = iter([node_ids.get(o.id, 0) for o in objects])
    target = TargetTransform(tf, target_frame, header, lambda: 0.0)
    outputs = ObjectOutputs(header, decoded.depth_m, decoded.intrinsics, lambda: next(ids), target)
    tracked = []
    for found in objects:
        output = outputs.get(SimpleNamespace(index=found.id, mask=found.mask, score=found.score, box=found.box,
                                             label=found.label))
        tracked.append(TrackedObject(state=STATE_CODES[found.state], reason=found.reason,
                                     visible_fraction=float(found.visible_fraction),
                                     time_in_state=duration(max(0.0, found.seconds_in_state)),
                                     object=output.message))
    return TrackedObjects(header=header, objects=tracked)
