"""The node under a namespace with remapped topics, as a multi-robot stack runs it (issue 14):
the shipped parameters file's relative topics resolve in the namespace, a remapping moves one to
another camera, every output is under /robot1/lisa_ros/..., and `lisa-ros ask --namespace` finds it.

Processes: a camera (test/support/camera_publisher.py: /front/...), the node started as the launch
file starts it (the installed config/lisa_ros.yaml, then overrides; -r __ns and -r remappings),
and this process's clients in /robot1.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lifecycle_msgs.msg import State

from lisa_ros.msg import Status
from lisa_ros.resources import share_directory
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from test_node import Client

pytestmark = pytest.mark.ros
Codes = Status


@pytest.fixture(scope="module")
def robot1(module_ros_domain, module_spawn, tmp_path_factory):
    checkpoint = write_tiny_lisa_checkpoint(tmp_path_factory.mktemp("ns") / "lisa", emit_seg=True)
    module_spawn(module_ros_domain, "camera_publisher.py", "front:rgbd")
    args = ["--ros-args", "--params-file", str(share_directory() / "config" / "lisa_ros.yaml"),
            "-p", f"model:={checkpoint}", "-p", "precision:=fp32", "-p", "max_new_tokens:=16", "-p", "max_frame_age:=5.0",
            "-r", "__ns:=/robot1",
            # The colour image and its intrinsics come from another driver's topics; depth is left
            # relative (/robot1/camera/aligned_depth_to_color/image_raw, not published: 2D answers).
            "-r", "camera/color/image_raw:=/front/color/image_raw",
            "-r", "camera/color/camera_info:=/front/color/camera_info"]
    module_spawn(module_ros_domain, "lisa_node_with_faults.py", *args, ready_timeout=90)
    client = Client(module_ros_domain.context(), node_name="/robot1/lisa_ros")
    client.wait_for_state(State.PRIMARY_STATE_ACTIVE, timeout=180)
    yield client
    client.close()


def test_relative_topics_resolve_in_the_namespace_and_follow_remappings(robot1):
    # The camera's first frames may still be on their way right after activation.
    assert robot1.wait_for(lambda: robot1.ask(command="x").result.status.code != Codes.NO_FRAME, 30)
    before = {k: len(v) for k, v in robot1.received.items()}
    response = robot1.ask(command="where is the cup?")  # the default camera's latest frame
    assert response.success, response.result.status.message
    assert response.result.header.frame_id == "front_color_optical_frame"  # the remapped topic's frames
    # Every output under /robot1/lisa_ros/ (the client subscribes there, default reliable QoS).
    for topic in ("result", "mask", "debug_image", "markers"):
        assert robot1.wait_for(lambda: len(robot1.received[topic]) > before[topic]), topic
    names = dict(robot1.node.get_topic_names_and_types())
    assert "/robot1/lisa_ros/result" in names and "/lisa_ros/result" not in names
    assert {"/robot1/lisa_ros/detections", "/robot1/lisa_ros/detections_3d", "/robot1/lisa_ros/points"} <= set(names)
    assert "/robot1/camera/aligned_depth_to_color/image_raw" in names  # relative depth, in the namespace


def test_lisa_ros_ask_resolves_the_service_in_its_namespace(robot1, module_ros_domain):
    ask = str(Path(sys.executable).parent / "lisa-ros")
    found = subprocess.run([ask, "ask", "where is the cup?", "--namespace", "robot1", "--wait", "30"],
                           env=module_ros_domain.env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stdout + found.stderr
    assert json.loads(found.stdout.strip().splitlines()[-1])["frame_id"] == "front_color_optical_frame"
    missing = subprocess.run([ask, "ask", "where is the cup?", "--wait", "3"],  # no namespace: not there
                             env=module_ros_domain.env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "/lisa_ros/reason_segment" in missing.stdout + missing.stderr


def test_under_sim_time_the_node_starts_without_clock_and_frame_age_follows_the_stamps(ros_domain, spawn, tmp_path):
    """use_sim_time with a simulator's /clock: autostart and diagnostics do not wait for /clock
    (steady timers); a frame's age is sim time minus its stamp, so when /clock jumps 10 s past the
    last frame it is STALE_FRAME although no wall time passed, and a newer frame is fine again."""
    import time

    import numpy as np
    from rosgraph_msgs.msg import Clock as ClockMsg

    from lisa_ros.ros.conversions import numpy_to_image

    checkpoint = write_tiny_lisa_checkpoint(tmp_path / "lisa", emit_seg=True)
    spawn(ros_domain, "lisa_node_with_faults.py", "--ros-args", "-p", f"model:={checkpoint}", "-p", "precision:=fp32", "-p", "use_sim_time:=true",
          "-p", "cameras:=['sim']", "-p", "sim.image_topic:=/sim/image_raw", "-p", "max_frame_age:=1.0",
          "-p", "max_new_tokens:=8", ready_timeout=90)
    client = Client(ros_domain.context())
    try:
        client.wait_for_state(State.PRIMARY_STATE_ACTIVE, timeout=180)  # no /clock published yet
        assert client.wait_for(lambda: client.received["diagnostics"], 10)
        clock_pub = client.node.create_publisher(ClockMsg, "/clock", 10)
        image_pub = client.node.create_publisher(type(numpy_to_image(np.zeros((1, 1, 3), np.uint8), "rgb8")),
                                                 "/sim/image_raw", 10)

        now = {"sec": 0}  # /clock is published at 20 Hz, as a simulator does (rclpy takes it best effort)

        def tick() -> None:
            if now["sec"]:
                message = ClockMsg()
                message.clock.sec = now["sec"]
                clock_pub.publish(message)

        client.node.create_timer(0.05, tick)

        def set_clock(sec: int) -> None:
            now["sec"] = sec

        def publish_frame(sec: int) -> None:
            frame = numpy_to_image(np.random.default_rng(sec).integers(0, 255, (64, 64, 3), dtype=np.uint8), "rgb8")
            frame.header.stamp.sec, frame.header.frame_id = sec, "sim_optical"
            image_pub.publish(frame)

        assert client.wait_for(lambda: clock_pub.get_subscription_count() >= 1 and image_pub.get_subscription_count() >= 1)
        set_clock(1000)
        time.sleep(0.5)
        publish_frame(1000)
        assert client.wait_for(lambda: client.ask(command="x", camera="sim").result.status.code != Codes.NO_FRAME, 30)
        fresh = client.ask(command="where is the cup?", camera="sim")
        assert fresh.success, fresh.result.status.message
        assert fresh.result.header.stamp.sec == 1000

        set_clock(1010)  # sim time jumps; the last frame is now 10 s old by its stamp
        stale = None
        for _ in range(50):
            stale = client.ask(command="where is the cup?", camera="sim")
            if stale.result.status.code == Codes.STALE_FRAME:
                break
            time.sleep(0.1)
        assert stale.result.status.code == Codes.STALE_FRAME and "10.00 s old" in stale.result.status.message, stale.result.status.message

        publish_frame(1010)
        assert client.wait_for(lambda: client.ask(command="where is the cup?", camera="sim").success, 30)
    finally:
        client.close()
