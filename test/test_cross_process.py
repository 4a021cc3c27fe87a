"""ReasonSegment service and action across two processes over real DDS.

The other process runs test/support/trivial_responder.py (one mask = the red pixels), so what is
checked here is the interface and conversion path: request image out, masks and header back.
"""
from __future__ import annotations

import math
import time
import uuid

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Header

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.msg import Status
from lisa_ros.ros.conversions import image_to_numpy, numpy_to_image
from lisa_ros.srv import ReasonSegment

pytestmark = pytest.mark.ros


def vga_image_with_red_box():
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, :, 2] = 200  # blue background
    rgb[100:220, 300:460] = (230, 20, 20)  # the red object: rows 100..219, columns 300..459
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1763800000, 987654321
    return numpy_to_image(rgb, "rgb8", header), rgb[:, :, 0] > 127


def wait_for(executor, future, timeout=30.0):
    executor.spin_until_future_complete(future, timeout_sec=timeout)
    assert future.done(), "no answer in time"
    return future.result()


@pytest.fixture
def responder(ros_domain, spawn):
    name = f"reason_segment_{uuid.uuid4().hex[:8]}"
    spawn(ros_domain, "trivial_responder.py", name)
    ctx = ros_domain.context()
    node = rclpy.create_node("test_client", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    node.action_clients_to_destroy = []
    yield name, node, executor
    for client in node.action_clients_to_destroy:
        client.destroy()
    executor.shutdown()
    node.destroy_node()


def test_service_returns_the_mask_and_the_source_header(responder):
    name, node, executor = responder
    client = node.create_client(ReasonSegment, name)
    assert client.wait_for_service(timeout_sec=30.0)
    image, expected_mask = vga_image_with_red_box()
    request = ReasonSegment.Request(command="segment the red box", image=image, explain=False)

    started = time.monotonic()
    response = wait_for(executor, client.call_async(request))
    print(f"\nservice round trip with a 640x480 image: {(time.monotonic() - started) * 1e3:.1f} ms")

    assert response.success, response.result.status.message
    assert response.result.status.code == Status.OK
    result = response.result
    assert result.header.frame_id == "camera_color_optical_frame"
    assert (result.header.stamp.sec, result.header.stamp.nanosec) == (1763800000, 987654321)
    assert result.command == "segment the red box"
    assert len(result.objects) == 1 and (result.objects[0].id, result.objects[0].label) == (1, "red box")
    mask = result.objects[0].mask
    assert (mask.encoding, mask.height, mask.width) == ("mono8", 480, 640)
    assert mask.header.frame_id == "camera_color_optical_frame"
    pixels = image_to_numpy(mask)
    assert set(np.unique(pixels)) == {0, 255}
    np.testing.assert_array_equal(pixels == 255, expected_mask)
    box = result.objects[0].box
    assert (box.x_offset, box.y_offset, box.width, box.height) == (300, 100, 160, 120)
    position = result.objects[0].pose.pose.position
    assert all(math.isnan(v) for v in (position.x, position.y, position.z))


def test_service_answers_a_malformed_image_with_a_reason(responder):
    name, node, executor = responder
    client = node.create_client(ReasonSegment, name)
    assert client.wait_for_service(timeout_sec=30.0)
    image, _ = vga_image_with_red_box()
    image.data = bytes(image.data)[:-10]  # truncated frame
    response = wait_for(executor, client.call_async(ReasonSegment.Request(command="x", image=image)))
    assert not response.success
    assert response.result.status.code == Status.INVALID_IMAGE
    assert "data holds" in response.result.status.message
    # ...and the responder is still serving.
    good, _ = vga_image_with_red_box()
    response = wait_for(executor, client.call_async(ReasonSegment.Request(command="x", image=good)))
    assert response.success


def send_goal(responder, command, **fields):
    """Send a goal with the red-box image; returns (goal handle, feedback list, expected mask)."""
    name, node, executor = responder
    client = ActionClient(node, ReasonSegmentAction, f"{name}_action")
    assert client.wait_for_server(timeout_sec=30.0)
    image, expected_mask = vga_image_with_red_box()
    feedback = []
    goal = ReasonSegmentAction.Goal(command=command, image=image, **fields)
    future = client.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback))
    handle = wait_for(executor, future)
    node.action_clients_to_destroy.append(client)
    return handle, feedback, expected_mask


def test_action_streams_the_mask_as_feedback_before_the_result(responder):
    handle, feedback, expected_mask = send_goal(responder, "segment the red box", session_id="s1")
    _, _, executor = responder
    assert handle.accepted
    outcome = wait_for(executor, handle.get_result_async())
    assert outcome.result.success
    assert outcome.result.result.session_id == "s1"
    # Feedback (a topic) and the result (a service reply) travel separately: the object feedback
    # was sent first but may be delivered after the result.
    deadline = time.monotonic() + 10
    while not any(f.objects for f in feedback) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    object_feedback = [f for f in feedback if f.objects]
    assert len(object_feedback) == 1
    assert object_feedback[0].stage == ReasonSegmentAction.Feedback.STAGE_DECODING_MASK
    assert object_feedback[0].objects[0].id == outcome.result.result.objects[0].id
    np.testing.assert_array_equal(image_to_numpy(object_feedback[0].objects[0].mask) == 255, expected_mask)
    assert outcome.result.result.header.stamp.nanosec == 987654321


def test_action_can_be_cancelled_while_running(responder):
    handle, feedback, _ = send_goal(responder, "wait for cancel")
    _, _, executor = responder
    deadline = time.monotonic() + 20
    while len(feedback) < 3 and time.monotonic() < deadline:  # it is streaming partial text
        executor.spin_once(timeout_sec=0.1)
    assert len(feedback) >= 3
    assert feedback[-1].partial_answer.startswith("...")
    cancel = wait_for(executor, handle.cancel_goal_async())
    assert len(cancel.goals_canceling) == 1
    outcome = wait_for(executor, handle.get_result_async())
    assert outcome.status == GoalStatus.STATUS_CANCELED
    assert not outcome.result.success
    assert outcome.result.result.status.code == Status.CANCELLED
