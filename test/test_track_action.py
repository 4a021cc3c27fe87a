"""The ~/track action and ~/tracks topic across processes over DDS, with the embedded model.

One node process (the embedded model, real reasoning); this process is the client and plays
held-out moving scenes as cameras (:class:`lisa_ros.testing.sequence_camera.SequenceCamera`),
with the ground-truth mask of every frame under the frame's stamp, so the masks the node follows
are checked against the truth of the very frame they are about.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from action_msgs.msg import GoalStatus
from builtin_interfaces.msg import Duration
from lifecycle_msgs.msg import State, Transition
from rclpy.action import ActionClient
from sensor_msgs.msg import Image

from lisa_ros.action import Track
from lisa_ros.data.scenes.motion import make_moving_sequence
from lisa_ros.msg import Status, TrackedObject, TrackedObjects
from lisa_ros.ros.conversions import image_to_numpy
from lisa_ros.ros.qos import action_qos
from lisa_ros.testing.sequence_camera import SequenceCamera
from test_node import Client

pytestmark = pytest.mark.ros
Codes = Status
SEED = 3  # the sequences of test_tracking.py (seed 3): bench/track.py measures on seed 7
FRAME_TIMEOUT_S = 1.0


class Player:
    """Plays a moving sequence as camera ``name`` from this process at 15 Hz, in a thread; keeps
    the ground truth of every frame sent, by stamp."""

    def __init__(self, client: Client, name: str, kind: str, index: int = 0):
        self.sequence = make_moving_sequence(SEED, index, kind)
        self.camera = SequenceCamera(client.node, self.sequence, name)
        self.truth: dict[tuple[int, int], tuple[int, np.ndarray]] = {}  # stamp -> (frame index, mask)
        self.scale = 1.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def play(self, loop: bool = True) -> None:
        self.stop()
        self._stop.clear()

        def run():
            sent, start = 0, time.monotonic()
            while not self._stop.is_set():
                index = sent % len(self.sequence) if loop else min(sent, len(self.sequence) - 1)
                header = self.camera.publish(index, self.scale)
                self.truth[(header.stamp.sec, header.stamp.nanosec)] = (index, self.sequence.target_masks[index])
                sent += 1
                time.sleep(max(0.0, start + sent / self.sequence.fps - time.monotonic()))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class TrackClient:
    """The Track action client and a ~/tracks recorder."""

    def __init__(self, client: Client):
        self.client = client
        self.action = ActionClient(client.node, Track, "/lisa_ros/track", **action_qos())
        self.published: list[TrackedObjects] = []
        client.node.create_subscription(TrackedObjects, "/lisa_ros/tracks", self.published.append, 100)

    def start(self, command: str, camera: str, seconds: float = 0.0, reacquire: bool = False):
        """Send a goal; returns (goal handle, feedback list)."""
        assert self.action.wait_for_server(timeout_sec=30)
        feedback: list = []
        goal = Track.Goal(command=command, camera=camera, reacquire=reacquire,
                          duration=Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9)))
        handle = self.client.wait(self.action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(
            f.feedback)))
        assert handle.accepted
        return handle, feedback

    def result(self, handle, timeout: float = 60.0):
        """(goal status, result) once the goal has ended."""
        response = self.client.wait(handle.get_result_async(), timeout)
        return response.status, response.result

    def run(self, command: str, camera: str, seconds: float, reacquire: bool = False):
        handle, feedback = self.start(command, camera, seconds, reacquire)
        status, result = self.result(handle, seconds + 60)
        return status, result, feedback


@pytest.fixture(scope="module")
def node(module_ros_domain, module_spawn):
    client = Client(module_ros_domain.context())
    params = {"model": "embedded", "precision": "fp32", "queue_depth": "2", "max_tracks": "2",
              "track_frame_timeout": str(FRAME_TIMEOUT_S), "track_lost_timeout": "1.0",
              "cameras": "['exit', 'still', 'other']"}
    for name in ("exit", "still", "other"):
        params.update({f"{name}.image_topic": f"/{name}/color/image_raw",
                       f"{name}.depth_topic": f"/{name}/depth/image_raw",
                       f"{name}.camera_info_topic": f"/{name}/color/camera_info"})
    args = ["--ros-args"] + [item for key, value in params.items() for item in ("-p", f"{key}:={value}")]
    client.process = module_spawn(module_ros_domain, "lisa_node_with_faults.py", *args, ready_timeout=90)
    client.wait_for_state(State.PRIMARY_STATE_ACTIVE, timeout=240)
    client.tracker = TrackClient(client)
    client.players = {"exit": Player(client, "exit", "exit"), "still": Player(client, "still", "pan"),
                      "other": Player(client, "other", "move")}
    client.players["exit"].play()
    client.players["still"].play()
    warm = client.ask(command=client.players["still"].sequence.query, camera="still")  # first-call costs
    assert warm.result.status.code == Codes.OK, warm.result.status.message
    yield client
    for player in client.players.values():
        player.stop()
    client.close()


def mask_of(tracked: TrackedObject) -> np.ndarray:
    return image_to_numpy(tracked.object.mask) > 0


def test_a_track_follows_a_target_out_of_view_and_back_under_its_id(node):
    """The exit sequence: the target is followed (masks against the truth of their own frames),
    reported lost with the reason when it leaves, and followed again under the same id when it
    comes back; 3D per frame; ~/tracks carries the same frames as the feedback."""
    player = node.players["exit"]
    player.play()  # from its first frame: the target is in view when the command is asked
    count_before = len(node.tracker.published)
    status, result, feedback = node.tracker.run(player.sequence.query, "exit", 7.0, reacquire=True)
    stamp = result.answer.header.stamp
    assert status == GoalStatus.STATUS_SUCCEEDED and result.status.code == Codes.OK, (
        result.status.message, player.truth.get((stamp.sec, stamp.nanosec), (None,))[0])
    assert "duration" in result.status.message and result.frames >= 40
    assert node.wait_for(lambda: len(feedback) == result.frames + 1, 5), (len(feedback), result.frames)
    assert feedback[0].stage == Track.Feedback.STAGE_REASONING
    answer_ids = [o.id for o in result.answer.objects]
    assert result.answer.status.code == Codes.OK and answer_ids
    ious, lost_reasons, found_again = [], [], False
    for message in feedback[1:]:
        tracks = message.tracks
        assert [o.object.id for o in tracks.objects] == answer_ids and tracks.camera == "exit"
        index, truth = player.truth[(tracks.header.stamp.sec, tracks.header.stamp.nanosec)]
        target = tracks.objects[0]
        if player.sequence.target_fractions[index] >= 0.1:
            ious.append((mask_of(target) & truth).sum() / max(1, (mask_of(target) | truth).sum()))
        if player.sequence.target_fractions[index] == 0 and target.state == TrackedObject.LOST:
            lost_reasons.append(target.reason)
            assert not mask_of(target).any() and np.isnan(target.object.pose.pose.position.z)
        if lost_reasons and target.state == TrackedObject.TRACKING:
            found_again = True
        if target.state == TrackedObject.TRACKING and target.object.valid_points:
            assert abs(target.object.pose.pose.position.z - 1.6) < 0.05  # the objects' plane (metres)
    assert np.mean(ious) > 0.7, np.mean(ious)
    assert lost_reasons and all("left the view" in r for r in lost_reasons) and found_again
    assert node.wait_for(lambda: len(node.tracker.published) >= count_before + result.frames, 5)
    published = [m for m in node.tracker.published[count_before:] if m.track_id == feedback[1].tracks.track_id]
    assert len(published) == result.frames


def test_a_reasoning_request_is_answered_while_a_track_runs_and_a_cancel_ends_it(node):
    player = node.players["still"]
    handle, feedback = node.tracker.start(player.sequence.query, "still")  # until cancelled
    assert node.wait_for(lambda: len(feedback) > 10, 60), node.tracker.result(handle)[1].status
    started = time.monotonic()
    answer = node.ask(command=player.sequence.query, camera="still")
    assert answer.result.status.code == Codes.OK, answer.result.status.message
    assert time.monotonic() - started < 30
    frames_before = len(feedback)
    assert node.wait_for(lambda: len(feedback) > frames_before + 10, 10)  # still following
    node.wait(handle.cancel_goal_async())
    status, result = node.tracker.result(handle)
    assert status == GoalStatus.STATUS_CANCELED and result.status.code == Codes.CANCELLED
    assert result.frames >= 20 and result.last.objects


@pytest.mark.parametrize("case", ["unknown camera", "empty command", "nothing to follow", "cancelled at once"])
def test_goals_that_cannot_be_followed_end_with_the_reason(node, case):
    player = node.players["still"]
    command, camera = player.sequence.query, "still"
    if case == "unknown camera":
        camera = "nowhere"
    elif case == "empty command":
        command = "  "
    elif case == "nothing to follow":
        colour = next(c for c in ("white", "black", "green", "blue", "yellow")
                      if c not in {o.colour for o in player.sequence.scene.objects})
        command = f"Which thing here is {colour}?"
    handle, _ = node.tracker.start(command, camera)
    if case == "cancelled at once":
        node.wait(handle.cancel_goal_async())
    status, result = node.tracker.result(handle)
    expected = {"unknown camera": (GoalStatus.STATUS_ABORTED, Codes.UNKNOWN_CAMERA),
                "empty command": (GoalStatus.STATUS_ABORTED, Codes.INVALID_COMMAND),
                "nothing to follow": (GoalStatus.STATUS_ABORTED, Codes.NO_TARGET),
                "cancelled at once": (GoalStatus.STATUS_CANCELED, Codes.CANCELLED)}[case]
    assert (status, result.status.code) == expected, (result.status.message, node.process.lines()[-20:])
    assert result.status.message
    if case == "nothing to follow":
        assert colour in result.answer.answer and not result.answer.objects


def test_more_tracks_than_max_tracks_are_busy(node):
    query = node.players["still"].sequence.query
    running = [node.tracker.start(query, "still") for _ in range(2)]  # two tracks of one camera
    try:
        assert node.wait_for(lambda: all(len(feedback) > 2 for _, feedback in running), 60)
        third, _ = node.tracker.start(query, "still")
        status, result = node.tracker.result(third)
        assert status == GoalStatus.STATUS_ABORTED and result.status.code == Codes.BUSY
        assert "max_tracks" in result.status.message
        ids = {feedback[-1].tracks.track_id for _, feedback in running}
        assert len(ids) == 2  # told apart on ~/tracks
    finally:
        for handle, _ in running:
            node.wait(handle.cancel_goal_async())
    assert all(node.tracker.result(handle)[1].status.code == Codes.CANCELLED for handle, _ in running)


@pytest.mark.parametrize("fault", ["camera stops", "frame size changes"])
def test_a_camera_that_stops_or_changes_size_ends_the_track_with_the_reason(node, fault):
    player = node.players["other"]
    player.scale = 1.0
    player.play()
    try:
        handle, feedback = node.tracker.start(player.sequence.query, "other")
        assert node.wait_for(lambda: len(feedback) > 5, 60), node.tracker.result(handle)[1].status
        stopped = time.monotonic()
        if fault == "camera stops":
            player.stop()
        else:
            player.scale = 0.5
        status, result = node.tracker.result(handle, 30)
        assert status == GoalStatus.STATUS_ABORTED
        if fault == "camera stops":
            assert result.status.code == Codes.NO_FRAME and "track_frame_timeout" in result.status.message
            assert time.monotonic() - stopped < FRAME_TIMEOUT_S + 3.0
        else:
            assert result.status.code == Codes.INVALID_IMAGE and "size" in result.status.message
        assert result.frames >= 5
    finally:
        player.stop()
        player.scale = 1.0


def test_deactivation_ends_a_track_and_the_node_tracks_again_once_active(node):
    query = node.players["still"].sequence.query
    handle, feedback = node.tracker.start(query, "still")
    assert node.wait_for(lambda: len(feedback) > 5, 60), node.tracker.result(handle)[1].status
    assert node.transition(Transition.TRANSITION_DEACTIVATE)
    status, result = node.tracker.result(handle, 30)
    assert status == GoalStatus.STATUS_ABORTED and result.status.code == Codes.NOT_READY
    inactive, _ = node.tracker.start(query, "still")
    assert node.tracker.result(inactive)[1].status.code == Codes.NOT_READY
    assert node.transition(Transition.TRANSITION_ACTIVATE)
    status, result, _ = node.tracker.run(query, "still", 2.0)
    assert status == GoalStatus.STATUS_SUCCEEDED and result.frames >= 5, result.status.message
