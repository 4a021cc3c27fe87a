"""Replaying recorded data offline: a bag's camera frames through the node's own request path,
the answers written to an output bag (``lisa-ros replay``). Deterministic; no DDS, no clock.

Each chosen colour frame (every N-th, or the first at or after each asked stamp, within a window
of log times) becomes a ReasonSegment request that carries the frame itself: its image (a
compressed one decoded to rgb8 first), the depth frame whose stamp is nearest within
``depth_slop`` (compressedDepth decoded to 32FC1 metres) and the camera_info stamped nearest to it
(a camera's calibration can change: a zoom, a new resolution), as a client
would send them. :class:`lisa_ros.ros.request.RequestHandler` serves it exactly as the running
node does (same checks, session, encoding, generation, 3D, result), and
:func:`lisa_ros.ros.outputs.answer_messages` gives what the node would publish; each is written
at its source frame's stamp under the node's topic names (``/lisa_ros/result``, ...), next to the
input topics copied unchanged, so that rviz, Foxglove or ``ros2 bag play`` show the answers over
the camera stream. A frame the handler refuses (an undecodable image, ...) or the model fails on
is counted with its reason (the status name) and the replay goes on.

With a ``score`` (``lisa-ros replay --annotations``: :class:`lisa_ros.evaluate.recorded.RecordedScore`
or anything with its methods) the chosen frames are the annotated ones (unless ``every`` or
``at`` choose), and each answer's masks go to it at the source frame's stamp; a replay whose
annotations match no frame of the bag fails (a DataError) and writes nothing.

With ``track`` the first chosen frame's answer is followed on every later frame, as the node's
``~/track`` action follows it (:class:`lisa_ros.tracking.follow.Follower`), deterministically:
each frame is stepped, and every ``correct_every`` frames the model makes one pass (a SAM
correction, or the command asked again for a lost object); each followed frame's
``/lisa_ros/tracks`` (``TrackedObjects``, 3D and target poses as for answers) is written at its
stamp, and with a ``score`` the objects not lost are scored on their frames (J, the DAVIS region
measure, is that IoU). A first answer without a target is asked again at the next chosen frame.

A chosen frame is answered once the bag's log time has passed it by ``PAIRING_WINDOW_S`` (or the
bag ends), so that a depth frame recorded a little after its colour frame still pairs, and the
transforms around its stamp are read: with ``target_frame`` the bag's ``/tf`` and ``/tf_static``
give the objects' target poses (and ``detections_3d``) as the node's TF would, interpolated at the
frame's stamp; a frame whose transform the bag lacks is answered with its transform_error.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lisa_ros.errors import DataError, ImageConversionError
from lisa_ros.ros import bags
from lisa_ros.ros.bag_output import BagRecorder
from lisa_ros.ros.cameras import CameraInput, stamp_ns, stamp_seconds, time_seconds
from lisa_ros.ros.conversions import compressed_to_rgb8, depth_to_meters, numpy_to_image
from lisa_ros.ros.messages import STATUS_NAMES
from lisa_ros.ros.outputs import answer_messages
from lisa_ros.ros.tf import add_tf_message
from lisa_ros.transforms import DEFAULT_CACHE_TIME_S, TransformBuffer

PAIRING_WINDOW_S = 0.5  # seconds of log time a chosen frame waits for its depth frame
TF_BEFORE_WINDOW_NS = 1_000_000_000  # /tf read from this long before a --start window
NODE_NAMESPACE = "/lisa_ros"  # the topics are written as the default node publishes them


@dataclass
class ReplayOptions:
    """What to ask and where. ``every``: answer every N-th colour frame (from the first in the
    window; None: every frame, or only the annotated ones when the replay is scored); ``at``: instead, the first colour frame stamped at or after each of these (seconds,
    header stamps); ``start``/``end``: the window, seconds of log time from the bag's start (None =
    the whole bag); ``storage``: of the output bag; ``copy_inputs``: write the input topics to the
    output bag too; ``depth_slop``: largest |depth stamp - colour stamp| paired (seconds);
    ``target_frame``: the frame of the objects' target poses ("" = none), from the bag's TF;
    ``track``: follow the first chosen frame's answer on every later frame (``correct_every``:
    a model pass, SAM correction or re-asking a lost object, every that many frames)."""

    command: str
    every: int | None = None
    at: list[float] | None = None
    start: float | None = None
    end: float | None = None
    explain: bool = False
    camera_topic: str | None = None
    depth_topic: str | None = None
    camera_info_topic: str | None = None
    storage: str = "mcap"
    copy_inputs: bool = True
    depth_slop: float = 0.02
    target_frame: str = ""
    track: bool = False
    correct_every: int = 5


@dataclass
class ReplaySummary:
    """What a replay did: frames seen in the window, answered (with their seconds per answer),
    refused (reason per frame stamp), answered without target poses (TF's reason per stamp), the
    topics found and the output bag."""

    topics: bags.BagTopics
    out: Path | None = None
    frames: int = 0
    answered: int = 0
    with_objects: int = 0
    seconds: list[float] = field(default_factory=list)
    refused: list[tuple[float, str]] = field(default_factory=list)
    transform_errors: list[tuple[float, str]] = field(default_factory=list)  # answered without target poses
    tracked: int = 0  # frames followed after the first answer (--track)
    states: dict[str, int] = field(default_factory=dict)  # object states over the followed frames
    tf_problems: list[str] = field(default_factory=list)  # transforms of the bag that were ignored (not finite...)

    def text(self) -> str:
        per = f", {np.mean(self.seconds):.2f} s per answer" if self.seconds else ""
        lines = [f"{self.frames} colour frames on {self.topics.colour}; {self.answered} answered "
                 f"({self.with_objects} with objects){per}; {len(self.refused)} refused"]
        lines += [f"  frame {stamp:.3f}: {reason}" for stamp, reason in self.refused[:10]]
        if self.tf_problems:
            lines.append(f"{len(self.tf_problems)} transforms of the bag ignored, e.g. {self.tf_problems[0]}")
        if self.tracked:
            states = ", ".join(f"{state} {count}" for state, count in sorted(self.states.items()))
            lines.append(f"{self.tracked} frames followed after the first answer (object states: {states})")
        if self.transform_errors:
            lines.append(f"{len(self.transform_errors)} answered without target poses, e.g. frame "
                         f"{self.transform_errors[0][0]:.3f}: {self.transform_errors[0][1]}")
        if self.out is not None:
            lines.append(f"output bag: {self.out}")
        return "\n".join(lines)


def _as_raw_colour(msg):
    """A colour frame as a raw Image (a CompressedImage decoded to rgb8, same header)."""
    if hasattr(msg, "encoding"):
        return msg
    return numpy_to_image(compressed_to_rgb8(msg), "rgb8", msg.header)


def _as_raw_depth(msg):
    """A depth frame as a raw Image (compressedDepth decoded to 32FC1 metres, same header)."""
    if hasattr(msg, "encoding"):
        return msg
    return numpy_to_image(np.nan_to_num(depth_to_meters(msg), nan=0.0).astype(np.float32), "32FC1", msg.header)


class _Outputs:
    """Stands where the node's Publishers stand: records :func:`answer_messages` in the bag."""

    points_wanted = False

    def __init__(self, recorder: BagRecorder, detections: bool):
        self.recorder = recorder
        self.detections = detections

    def publish(self, result, outputs, rgb, answer, debug_image: bool, markers: bool, cloud=None) -> None:
        images = {"debug_image/compressed"} if debug_image else set()
        for name, msg in answer_messages(result, outputs, rgb, answer, images, markers, cloud, self.detections):
            self.recorder.write(f"{NODE_NAMESPACE}/{name}", stamp_ns(result.header), msg)


class _BagTf:
    """Stands where the node's TfLookup stands: the bag's ``/tf`` and ``/tf_static`` as the replay
    reads them (log order) in our TransformBuffer. Lookups never wait: a frame is answered only
    after the transforms logged within ``PAIRING_WINDOW_S`` of it have been read."""

    def __init__(self):
        self.buffer = TransformBuffer(cache_time_s=DEFAULT_CACHE_TIME_S)
        self.problems: list[str] = []

    def add(self, message, static: bool) -> None:
        self.problems += add_tf_message(self.buffer, message, static)

    def keep_history(self, seconds: float) -> None:
        self.buffer.cache_time_s = max(seconds, PAIRING_WINDOW_S + DEFAULT_CACHE_TIME_S)

    def lookup(self, target_frame: str, source_frame: str, stamp, timeout_s: float):
        return self.buffer.lookup_transform(target_frame, source_frame, time_seconds(stamp))


class FrameChooser:
    """The colour frames of a replay as they are read: which to answer (every ``every``-th, or
    with ``at`` the first frame stamped at or after each of those stamps (seconds), or with a
    ``score`` and neither of those the annotated ones), and the span of their stamps; a
    ``score`` is told of every frame (:meth:`see`) and checked at the end (:meth:`check_found`)."""

    def __init__(self, every: int | None, at: list[float] | None, score=None):
        self.every, self.count = every or 1, 0
        self.waiting = sorted(at) if at else None
        self.score = score
        self.annotated = score.annotated_stamp if score is not None and every is None and not at else None
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def see(self, header) -> bool:
        """A colour frame of the bag, by its header: whether to answer it."""
        frame_ns = stamp_ns(header)
        self.first_ns = frame_ns if self.first_ns is None else min(self.first_ns, frame_ns)
        self.last_ns = frame_ns if self.last_ns is None else max(self.last_ns, frame_ns)
        if self.score is not None:
            self.score.seen(frame_ns)
        if self.annotated is not None:
            return self.annotated(frame_ns) is not None
        stamp_s = stamp_seconds(header)
        if self.waiting is not None:
            hit = bool(self.waiting) and stamp_s >= self.waiting[0]
            while self.waiting and stamp_s >= self.waiting[0]:
                self.waiting.pop(0)
            return hit
        chosen = self.count % self.every == 0
        self.count += 1
        return chosen

    def check_found(self) -> None:
        """With a score: DataError when none of its annotations is for a frame seen."""
        if self.score is not None:
            self.score.check_found(self.first_ns, self.last_ns)


def replay(bag: str | Path, out: str | Path, engine, options: ReplayOptions, progress: bool = True,
           live_changes: dict | None = None, score=None) -> ReplaySummary:
    """Replay ``bag`` into the output bag ``out`` with ``engine`` (a loaded LisaEngine).

    Raises DataError for a bag that cannot be used (see :mod:`lisa_ros.ros.bags`) or whose
    annotations (``score``) match none of its frames, and UsageError for bad options; the output
    bag is then removed (nothing half-written at ``out``).
    ``live_changes``: run-time parameters other than their defaults (``publish_markers``, ...)."""
    from tqdm import tqdm

    from lisa_ros.ros.parameters import default_live
    from lisa_ros.ros.request import RequestHandler
    from lisa_ros.ros.serving import Job, RequestError
    from lisa_ros.sessions import FrameCache, SessionStore
    from lisa_ros.srv import ReasonSegment

    if options.every is not None and options.every < 1:
        raise DataError("--every must be 1 or more")
    if options.correct_every < 1:
        raise DataError("--correct-every must be 1 or more")
    reader = bags.open_bag(bag)
    recorder = None
    try:
        topics = bags.find_topics(reader, options.camera_topic, options.depth_topic, options.camera_info_topic)
        summary = ReplaySummary(topics)
        start_ns, end_ns = bags.log_window(reader, options.start, options.end)
        recorder = BagRecorder(out, options.storage)
        try:
            import vision_msgs.msg  # noqa: F401  (the detection topics exist only with it)

            detections = True
        except ImportError:
            detections = False
        live = default_live(**{"max_frame_age": 0.0, "target_frame": options.target_frame, **(live_changes or {})})
        tf = _BagTf()
        handler = RequestHandler(engine, SessionStore(), FrameCache(2), {"replay": CameraInput("replay")}, "replay",
                                 600.0, _Outputs(recorder, detections), read_live=lambda: live, tf=tf)
        stopping = threading.Event()
        if options.copy_inputs:
            for connection in reader.connections:
                if connection.topic in topics.all:
                    recorder.copy_topic(connection)
        chooser = FrameChooser(options.every, options.at, score)
        depths: deque = deque(maxlen=50)
        infos: deque = deque(maxlen=50)
        pending: list[tuple[int, object, bool]] = []  # (log ns, colour message, chosen), waiting for depth
        following: dict = {}  # "follower", "ids" (answer mask index -> object id) once a track has started

        def refuse(colour, reason: str) -> None:
            summary.refused.append((stamp_seconds(colour.header), reason))
            if score is not None:
                score.refused(stamp_ns(colour.header), reason)

        def request_for(colour):
            """The ReasonSegment request that carries ``colour`` with its depth and camera_info,
            or None (refused) when it cannot be decoded."""
            stamp = stamp_seconds(colour.header)
            depth = min((d for d in depths if abs(stamp_seconds(d.header) - stamp) <= options.depth_slop),
                        key=lambda d: abs(stamp_seconds(d.header) - stamp), default=None)
            request = ReasonSegment.Request(command=options.command, explain=options.explain)
            try:
                request.image = _as_raw_colour(colour)
                if depth is not None:
                    request.depth = _as_raw_depth(depth)
                info = min(infos, key=lambda i: abs(stamp_seconds(i.header) - stamp), default=None)
                if info is not None:
                    request.camera_info = info
            except ImageConversionError as exc:
                refuse(colour, f"INVALID_IMAGE: {exc}")
                return None
            return request

        def start_following(answer, rgb, encoded, stamp: float) -> None:
            from lisa_ros.tracking.follow import FollowOptions, Follower, NoTargetError

            follower = Follower(engine, options.command,
                                FollowOptions(reacquire=True, reacquire_after_s=live.track_reacquire_after))
            try:
                follower.begin(answer, rgb, stamp, encoded)
            except NoTargetError:  # nothing to follow: the next chosen frame is asked again
                return
            following["follower"] = follower

        def follow(colour) -> None:
            from lisa_ros.ros.request import decode, request_source
            from lisa_ros.ros.tracks import tracked_objects

            request = request_for(colour)
            if request is None:
                return
            try:
                decoded = decode(request_source(request), live.max_image_pixels)
                objects = following["follower"].step(decoded.rgb, stamp_seconds(colour.header))
            except (RequestError, ValueError) as exc:  # undecodable, or another size than the first frame
                refuse(colour, f"INVALID_IMAGE: {exc}")
                return
            summary.tracked += 1
            if summary.tracked % options.correct_every == 0 and not following.get("model_problem"):
                try:
                    following["follower"].model_pass()
                except Exception as exc:  # as the node's track: its corrections stop, the track goes on
                    following["model_problem"] = f"model passes stopped: {type(exc).__name__}: {exc}"
                    summary.refused.append((stamp_seconds(colour.header), following["model_problem"]))
            for found in objects:
                summary.states[found.state] = summary.states.get(found.state, 0) + 1
            message = tracked_objects(colour.header, decoded, objects, following["ids"], tf, live.target_frame)
            message.track_id, message.command, message.camera = 1, options.command, "replay"
            recorder.write(f"{NODE_NAMESPACE}/tracks", stamp_ns(colour.header), message)
            if score is not None:
                score.answered(stamp_ns(colour.header), [o.mask for o in objects if o.state != "lost"])

        def answer(colour) -> None:
            stamp = stamp_seconds(colour.header)
            request = request_for(colour)
            if request is None:
                return
            started = time.monotonic()
            job = Job(request=request, received_at=started, deadline=math.inf)
            answers = []

            def on_answer(answer, rgb, encoded, _source):
                answers.append(answer)
                if options.track:
                    start_following(answer, rgb, encoded, stamp)
            job.on_answer = on_answer
            try:
                handler(job, stopping)
            except RequestError as exc:
                refuse(colour, f"{STATUS_NAMES.get(exc.code, exc.code)}: {exc}")
                return
            except Exception as exc:  # as the node's server answers it: a model failure, and the replay goes on
                refuse(colour, f"MODEL_ERROR: {type(exc).__name__}: {exc}")
                return
            if score is not None:
                score.answered(stamp_ns(colour.header), [m.mask for m in answers[0].masks] if answers else [])
            summary.answered += 1
            summary.with_objects += int(bool(job.result.objects))
            if job.result.no_target_pose:
                summary.transform_errors.append((stamp, job.result.transform_error))
            summary.seconds.append(time.monotonic() - started)
            if "follower" in following:
                following["ids"] = {index: obj.id for index, obj in enumerate(job.result.objects)}

        def process(colour, chosen: bool) -> None:
            if "follower" in following:
                follow(colour)
            elif chosen:
                answer(colour)

        if start_ns is not None and topics.tf:
            # /tf_static is latched once, often before the window (copied too: rviz needs the tree);
            # /tf from a second before, for the first frames' interpolation.
            for message in bags.read_messages(reader, topics.tf, None, start_ns - 1):
                if message.topic == "/tf_static":
                    tf.add(message.msg, static=True)
                    if options.copy_inputs:
                        recorder.write_raw(message.topic, message.log_ns, message.raw)
                elif message.log_ns >= start_ns - TF_BEFORE_WINDOW_NS:
                    tf.add(message.msg, static=False)
        bar = tqdm(total=None, unit="frame", desc="replaying", disable=not progress)
        for message in bags.read_messages(reader, topics.all, start_ns, end_ns):
            if options.copy_inputs:
                recorder.write_raw(message.topic, message.log_ns, message.raw)
            while pending and message.log_ns - pending[0][0] > PAIRING_WINDOW_S * 1e9:
                process(*pending.pop(0)[1:])
            if message.topic == topics.colour:
                summary.frames += 1
                bar.update(1)
                chosen = chooser.see(message.msg.header)
                if chosen or options.track:
                    pending.append((message.log_ns, message.msg, chosen))
            elif message.topic == topics.depth:
                depths.append(message.msg)
            elif message.topic == topics.camera_info:
                infos.append(message.msg)
            elif message.topic in topics.tf:
                tf.add(message.msg, static=message.topic == "/tf_static")
        for _, colour, chosen in pending:
            process(colour, chosen)
        summary.tf_problems = tf.problems
        bar.close()
        chooser.check_found()
        summary.out = recorder.close(complete=True)
        recorder = None
        return summary
    finally:
        if recorder is not None:  # failed half-way: nothing is left at `out`
            recorder.close(complete=False)
        reader.close()
