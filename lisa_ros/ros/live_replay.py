"""Replaying a bag through a running node in real time (``lisa-ros replay --node``): what the robot
would have seen, at the speed it would have seen it, and how old each answered frame was when its
answer came back (the cost of thinking on a moving robot).

The bag's camera topics (colour, depth, camera_info) and ``/tf``/``/tf_static`` are published
under their own names with their original timing (``rate`` x real time), and ``/clock`` with the
bag's log time, as ``ros2 bag play --clock`` does: run the node with ``use_sim_time:=true`` and
its camera topics set to the bag's, so that its frame ages and TF are in the bag's time. At each
chosen frame (:class:`lisa_ros.ros.replay.FrameChooser`) the command goes through the node's
ReasonSegment service with ``min_stamp`` = that frame's stamp (the node answers on that frame, or
a later one if it missed it), one request at a time, as a robot's loop asks again when its answer
is in: a chosen frame that passes while an answer is out is counted as skipped. Everything the
node publishes (``<node>/result``, ``mask``, ``explanation``, ``markers``, ``detections``,
``detections_3d``) and the inputs as they went over DDS are recorded into the output bag at their
receive times on the bag's clock (:class:`lisa_ros.ros.recording.TopicRecorder`).

Frame age of an answer = the bag's time when the answer arrived - the answered frame's stamp.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lisa_ros.errors import DataError
from lisa_ros.ros import bags
from lisa_ros.ros.cameras import stamp_ns, time_from_ns
from lisa_ros.ros.messages import STATUS_NAMES
from lisa_ros.ros.replay import FrameChooser, ReplayOptions

CLOCK_PERIOD_S = 0.01  # /clock is published at least this often while the bag plays
ANSWER_WAIT_S = 300.0  # after the bag ends, how long the last answer is waited for


@dataclass
class LiveReplaySummary:
    """What a live replay did: colour frames published, requests asked, answered (OK or
    NO_TARGET; with objects), refused (reason per asked stamp), chosen frames skipped while an
    answer was out, answers about a later frame than the asked one, and per answer its frame age
    (bag seconds) and round trip (wall seconds); the messages recorded per topic."""

    topics: bags.BagTopics
    out: Path | None = None
    frames: int = 0
    asked: int = 0
    answered: int = 0
    with_objects: int = 0
    skipped: int = 0
    later_frame: int = 0
    refused: list[tuple[float, str]] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    recorded: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"{self.frames} colour frames played on {self.topics.colour}; {self.asked} asked, {self.answered} "
                 f"answered ({self.with_objects} with objects), {len(self.refused)} refused, {self.skipped} chosen "
                 f"frames skipped while an answer was out"]
        if self.ages:
            lines.append(f"frame age when the answer arrived: mean {np.mean(self.ages):.2f} s, max {max(self.ages):.2f} s "
                         f"(round trip mean {np.mean(self.round_trips):.2f} s); {self.later_frame} answers on a later "
                         "frame than asked")
        lines += [f"  frame {stamp:.3f}: {reason}" for stamp, reason in self.refused[:10]]
        if self.out is not None:
            lines.append(f"output bag: {self.out}")
        return "\n".join(lines)


def _output_topics(node_name: str) -> dict[str, type]:
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    from lisa_ros.msg import SegmentationResult

    topics = {"result": SegmentationResult, "mask": Image, "explanation": String, "markers": MarkerArray}
    try:
        from vision_msgs.msg import Detection2DArray, Detection3DArray

        topics.update(detections=Detection2DArray, detections_3d=Detection3DArray)
    except ImportError:
        pass
    return {f"{node_name}/{name}": kind for name, kind in topics.items()}


def replay_live(bag: str | Path, out: str | Path, options: ReplayOptions, node_name: str = "/lisa_ros",
                camera: str = "", rate: float = 1.0, wait_s: float = 30.0, progress: bool = True,
                score=None, context=None) -> LiveReplaySummary:
    """Play ``bag`` to the node ``node_name`` (its service ``<node_name>/reason_segment``), ask
    ``options.command`` at the chosen frames (``camera``: the node's camera to ask, "" = its
    default) and record into the bag ``out``. ``score``: as :func:`lisa_ros.ros.replay.replay`'s
    (each answer's masks at the answered frame's stamp). ``context``: an initialised rclpy
    context (None: one of its own).

    Raises DataError for a bag that cannot be used, no node answering within ``wait_s``, or
    annotations of no frame; the output bag is then removed (nothing half-written at ``out``)."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from tqdm import tqdm

    from lisa_ros.msg import Status
    from lisa_ros.ros.conversions import image_to_numpy
    from lisa_ros.ros.qos import REQUEST_QOS
    from lisa_ros.ros.recording import TopicRecorder
    from lisa_ros.ros.tf import TF_QOS, TF_STATIC_QOS
    from lisa_ros.srv import ReasonSegment

    if not rate > 0:
        raise DataError("--rate must be above 0")
    if options.every is not None and options.every < 1:
        raise DataError("--every must be 1 or more")
    node_name = "/" + node_name.strip("/")
    reader = bags.open_bag(bag)
    own_context = context is None
    if own_context:
        context = rclpy.Context()
        rclpy.init(context=context)
    node = recorder = executor = None
    try:
        topics = bags.find_topics(reader, options.camera_topic, options.depth_topic, options.camera_info_topic)
        summary = LiveReplaySummary(topics)
        node = rclpy.create_node("lisa_ros_replay", context=context,
                                 parameter_overrides=[Parameter("use_sim_time", value=True)])
        types = {c.topic: bags.message_class(c.msgtype) for c in reader.connections if c.topic in topics.all}
        publishers = {topic: node.create_publisher(kind, topic, TF_STATIC_QOS if topic == "/tf_static" else
                                                   TF_QOS if topic == "/tf" else QoSProfile(depth=10))
                      for topic, kind in types.items()}
        clock = node.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        client = node.create_client(ReasonSegment, f"{node_name}/reason_segment", qos_profile=REQUEST_QOS)
        executor = MultiThreadedExecutor(num_threads=2, context=context)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        if not client.wait_for_service(timeout_sec=wait_s):
            raise DataError(f"no ReasonSegment service at {node_name}/reason_segment within {wait_s:g} s: start "
                            f"lisa_ros_node with use_sim_time:=true and its camera topics set to the bag's "
                            f"({', '.join(t for t in (topics.colour, topics.depth, topics.camera_info) if t)})")
        inputs = types if options.copy_inputs else {}
        recorder = TopicRecorder(node, out, {**inputs, **_output_topics(node_name)}, storage=options.storage)
        start_ns, end_ns = bags.log_window(reader, options.start, options.end)
        chooser = FrameChooser(options.every, options.at, score)
        idle = threading.Event()
        idle.set()
        lock = threading.Lock()
        played = {"first_log": None, "start": 0.0}
        asking: dict = {}

        def bag_now_ns() -> int:
            if played["first_log"] is None:
                return reader.start_time
            return played["first_log"] + int((time.monotonic() - played["start"]) * rate * 1e9)

        failure: list[Exception] = []  # raised while taking an answer in (executor thread): re-raised here

        def refuse(asked_ns: int, reason: str) -> None:
            summary.refused.append((asked_ns / 1e9, reason))
            if score is not None:
                score.refused(asked_ns, reason)

        def answered(future, asked_ns: int, sent: float) -> None:
            arrived_ns = bag_now_ns()
            try:
                with lock:
                    take(future, asked_ns, sent, arrived_ns)
            except Exception as exc:  # e.g. annotations of another size: ends the replay, clearly
                failure.append(exc)
            finally:
                idle.set()

        def take(future, asked_ns: int, sent: float, arrived_ns: int) -> None:
            try:
                response = future.result()
            except Exception as exc:  # the service call itself failed (the node went away)
                refuse(asked_ns, f"no answer: {type(exc).__name__}: {exc}")
                return
            result = response.result
            code = result.status.code
            if code not in (Status.OK, Status.NO_TARGET):
                refuse(asked_ns, f"{STATUS_NAMES.get(code, code)}: {result.status.message}")
                return
            summary.answered += 1
            summary.with_objects += int(bool(result.objects))
            answer_ns = stamp_ns(result.header)
            summary.ages.append((arrived_ns - answer_ns) / 1e9)
            summary.round_trips.append(time.monotonic() - sent)
            summary.later_frame += int(answer_ns != asked_ns)
            if score is None:
                return
            if answer_ns != asked_ns:
                score.refused(asked_ns, f"answered on a later frame, {answer_ns / 1e9:.3f} s")
            if any(o.mask.width == 0 for o in result.objects):
                raise DataError("the node sends no masks in its results (result_masks is not 'full'): "
                                "nothing to score; set result_masks:=full")
            score.answered(answer_ns, [image_to_numpy(o.mask) > 0 for o in result.objects])

        def ask(colour) -> None:
            asked_ns = stamp_ns(colour.header)
            if not idle.is_set():
                summary.skipped += 1
                return
            idle.clear()
            summary.asked += 1
            request = ReasonSegment.Request(command=options.command, explain=options.explain, camera=camera,
                                            target_frame=options.target_frame, min_stamp=colour.header.stamp)
            sent = time.monotonic()
            asking["stamp"] = asked_ns
            client.call_async(request).add_done_callback(lambda f: answered(f, asked_ns, sent))

        def wait_until(log_ns: int) -> None:
            while True:
                left = played["start"] + (log_ns - played["first_log"]) / 1e9 / rate - time.monotonic()
                if left <= 0:
                    break
                clock.publish(Clock(clock=time_from_ns(min(bag_now_ns(), log_ns))))
                time.sleep(min(CLOCK_PERIOD_S, left))
            clock.publish(Clock(clock=time_from_ns(log_ns)))

        # The clock first, so that nothing is recorded at time 0: this node's clock must be at the
        # bag's start before any message is published.
        start_clock = start_ns if start_ns is not None else reader.start_time
        until = time.monotonic() + wait_s
        while node.get_clock().now().nanoseconds < start_clock and time.monotonic() < until:
            clock.publish(Clock(clock=time_from_ns(start_clock)))
            time.sleep(CLOCK_PERIOD_S)
        if start_ns is not None and "/tf_static" in topics.tf:  # latched once, often before the window
            for message in bags.read_messages(reader, ("/tf_static",), None, start_ns):
                publishers["/tf_static"].publish(message.msg)
        bar = tqdm(total=None, unit="frame", desc="playing", disable=not progress)
        for message in bags.read_messages(reader, topics.all, start_ns, end_ns):
            if failure:
                raise failure[0]
            if played["first_log"] is None:
                played["first_log"], played["start"] = message.log_ns, time.monotonic()
            wait_until(message.log_ns)
            publishers[message.topic].publish(message.msg)
            if message.topic == topics.colour:
                summary.frames += 1
                bar.update(1)
                if chooser.see(message.msg.header):
                    ask(message.msg)
        bar.close()
        give_up = time.monotonic() + ANSWER_WAIT_S
        while not idle.is_set() and time.monotonic() < give_up:  # the clock goes on for the last answer
            clock.publish(Clock(clock=time_from_ns(bag_now_ns())))
            idle.wait(CLOCK_PERIOD_S)
        if failure:
            raise failure[0]
        if not idle.is_set():
            with lock:
                refuse(asking["stamp"], f"no answer within {ANSWER_WAIT_S:g} s after the bag ended")
        time.sleep(0.3)  # the node's last outputs reach the recorder
        chooser.check_found()
        summary.recorded = dict(recorder.counts)
        summary.out = recorder.close(complete=True)
        recorder = None
        return summary
    finally:
        if recorder is not None:
            recorder.close(complete=False)
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if own_context:
            context.try_shutdown()
        reader.close()
