"""A client that disappears mid-action (not part of the package): sends one ReasonSegment goal
(an explicit image, an explanation asked), prints "ready" once accepted, and at the first
feedback with answer text exits at once, without cancelling or waiting for the result, as a
process that crashes or loses its network would."""
from __future__ import annotations

import os
import time

import numpy as np
import rclpy
from rclpy.action import ActionClient

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.ros.conversions import numpy_to_image


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("vanishing_client")
    client = ActionClient(node, ReasonSegmentAction, "/lisa_ros/reason_segment")
    assert client.wait_for_server(timeout_sec=60)
    image = numpy_to_image(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8), "rgb8")

    def on_feedback(message):
        if message.feedback.partial_answer:
            print("vanishing", flush=True)
            os._exit(0)

    future = client.send_goal_async(ReasonSegmentAction.Goal(command="where is the cup?", image=image, explain=True),
                                    feedback_callback=on_feedback)
    rclpy.spin_until_future_complete(node, future, timeout_sec=60)
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    os._exit(1)  # never got any answer text


if __name__ == "__main__":
    main()
