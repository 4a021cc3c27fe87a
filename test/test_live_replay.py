"""Replaying a bag through a running node in real time (lisa_ros/ros/live_replay.py, ``lisa-ros
replay --node``): the node (embedded model, use_sim_time) in its own process, the bag of
test_replay played to it from this one with /clock, the answers recorded into an output bag and
the frame age of each answer reported."""
from __future__ import annotations

import pytest
from lifecycle_msgs.msg import State

from lisa_ros.errors import DataError
from lisa_ros.ros import bags
from lisa_ros.ros.conversions import image_to_numpy
from test_node import Client
from test_replay import EVERY, FRAME_NS, START_NS, recorded, sequence  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
# The 1 s bag takes 20 s: a few answers on two busy cores (an fp32 answer with its frame wait
# took 5-11 s in the Jazzy lane; at 0.1 one answer could fill the whole bag).
RATE = 0.05


@pytest.fixture(scope="module")
def node(module_ros_domain, module_spawn, sequence):
    params = {"model": "embedded", "precision": "fp32", "use_sim_time": "true",
              "camera.image_topic": "/camera/color/image_raw",
              "camera.depth_topic": "/camera/aligned_depth_to_color/image_raw",
              "camera.camera_info_topic": "/camera/color/camera_info"}
    args = ["--ros-args"] + [item for key, value in params.items() for item in ("-p", f"{key}:={value}")]
    context = module_ros_domain.context()
    client = Client(context)
    client.process = module_spawn(module_ros_domain, "lisa_node_with_faults.py", *args, ready_timeout=90)
    client.wait_for_state(State.PRIMARY_STATE_ACTIVE, timeout=240)
    from lisa_ros.ros.conversions import numpy_to_image

    client.ask(command=sequence.query, image=numpy_to_image(sequence.frames[0], "rgb8"))  # first-call costs
    client.close()
    yield context


def test_a_bag_plays_to_the_running_node_and_each_answer_reports_its_frame_age(node, recorded, sequence, tmp_path):
    from lisa_ros.msg import SegmentationResult
    from lisa_ros.ros.live_replay import replay_live
    from lisa_ros.ros.replay import ReplayOptions

    path, topics = recorded
    summary = replay_live(path, tmp_path / "live", ReplayOptions(sequence.query, every=EVERY, target_frame="odom"),
                          rate=RATE, progress=False, context=node)
    print(summary.text())
    assert summary.frames == len(sequence) and summary.asked >= 2 and not summary.refused
    assert summary.answered == summary.asked and summary.asked + summary.skipped == len(range(0, len(sequence), EVERY))
    # The age is the answer's time in the bag's clock: the round trip, slowed by the rate, plus the
    # 4 ms the colour frame was logged after its stamp (and any frames the node waited for).
    for age, round_trip in zip(summary.ages, summary.round_trips):
        assert 0 < age and abs(age - round_trip * RATE - 0.004) < 0.15, (age, round_trip)

    reader = bags.open_bag(summary.out)
    try:
        recorded_topics = {c.topic: reader.topics[c.topic].msgcount for c in reader.connections}
        results = [(m.log_ns, m.msg) for m in bags.read_messages(reader, ("/lisa_ros/result",))]
        masks = [m.msg for m in bags.read_messages(reader, ("/lisa_ros/mask",))]
        colour_logs = [m.log_ns for m in bags.read_messages(reader, ("/camera/color/image_raw",))]
    finally:
        reader.close()
    assert recorded_topics["/camera/color/image_raw"] == len(sequence)  # the inputs as they went over DDS (reliable)
    assert "/tf" in recorded_topics and "/tf_static" in recorded_topics
    assert len(results) == summary.answered and all(isinstance(r, SegmentationResult) for _, r in results)
    # Log times are the bag's clock (/clock), not the wall clock: inside the bag's own span.
    assert START_NS <= colour_logs[0] and colour_logs[-1] <= START_NS + len(sequence) * FRAME_NS + 10**9
    # (What the masks are worth is test_replay's: the same request path on the same frames.)
    for (log_ns, result), mask in zip(results, masks):
        k = (result.header.stamp.sec * 10**9 + result.header.stamp.nanosec - START_NS) // FRAME_NS
        assert result.header == topics["/camera/color/image_raw"][k][1].header  # answered on a played frame
        assert mask.header == result.header and image_to_numpy(mask).shape == sequence.target_masks[k].shape
        assert log_ns > START_NS + k * FRAME_NS  # published after that frame, in the bag's time
        if result.objects:
            assert result.target_frame == "odom" and not result.no_target_pose  # the bag's TF, replayed


def test_without_a_node_the_replay_fails_clearly_and_writes_nothing(recorded, ros_domain, tmp_path):
    from lisa_ros.ros.live_replay import replay_live
    from lisa_ros.ros.replay import ReplayOptions

    path, _ = recorded
    with pytest.raises(DataError, match="no ReasonSegment service at /nobody/reason_segment within 1 s: start "
                                        "lisa_ros_node with use_sim_time:=true"):
        replay_live(path, tmp_path / "live", ReplayOptions("the ball"), node_name="nobody", wait_s=1.0,
                    progress=False, context=ros_domain.context())
    assert list(tmp_path.iterdir()) == []
