"""A trivial ReasonSegment responder written for the cross-process tests (not part of the package).

It answers the service and the action with one mask: the pixels whose red channel exceeds 127.
It exercises the real interfaces and conversions over real DDS, with no model behind them.
Usage: trivial_responder.py NAME   (serves service NAME and action NAME_action)
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import RegionOfInterest

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.msg import SegmentationResult, SegmentedObject, Status
from lisa_ros.ros.conversions import ImageConversionError, image_to_rgb8, mask_to_image
from lisa_ros.srv import ReasonSegment


def segment_red(request) -> SegmentationResult:
    result = SegmentationResult()
    result.header = request.image.header
    result.command = request.command
    result.session_id = request.session_id or "trivial-session"
    try:
        rgb = image_to_rgb8(request.image)
    except ImageConversionError as exc:
        result.status = Status(code=Status.INVALID_IMAGE, message=f"bad image: {exc}")
        return result
    mask = rgb[:, :, 0] > 127
    ys, xs = np.nonzero(mask)
    box = RegionOfInterest()
    if xs.size:
        box.x_offset, box.y_offset = int(xs.min()), int(ys.min())
        box.width, box.height = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
    result.answer = "Sure, it is the red box [SEG]."
    obj = SegmentedObject(id=1, label="red box", score=1.0, mask=mask_to_image(mask, request.image.header), box=box)
    obj.pose.header = request.image.header
    obj.pose.pose.position.x = obj.pose.pose.position.y = obj.pose.pose.position.z = math.nan  # no depth
    result.objects = [obj]
    result.generated_tokens = 4
    result.status = Status(code=Status.OK)
    return result


class TrivialResponder(Node):
    def __init__(self, name: str):
        super().__init__("trivial_responder")
        group = ReentrantCallbackGroup()
        self.create_service(ReasonSegment, name, self.on_service, callback_group=group)
        ActionServer(
            self, ReasonSegmentAction, f"{name}_action", self.on_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=group,
        )

    def on_service(self, request, response):
        response.result = segment_red(request)
        response.success = response.result.status.code == Status.OK
        return response

    def on_goal(self, handle):
        goal = handle.request
        started = time.monotonic()
        feedback = ReasonSegmentAction.Feedback(stage=ReasonSegmentAction.Feedback.STAGE_GENERATING)
        # "wait" commands stream text until cancelled (or 30 s), to exercise cancel.
        while goal.command.startswith("wait"):
            if handle.is_cancel_requested:
                handle.canceled()
                return ReasonSegmentAction.Result(result=SegmentationResult(
                    status=Status(code=Status.CANCELLED, message="cancelled")))
            if time.monotonic() - started > 30:
                break
            feedback.partial_answer += "."
            feedback.elapsed.sec = int(time.monotonic() - started)
            handle.publish_feedback(feedback)
            time.sleep(0.05)
        result = segment_red(goal)
        ok = result.status.code == Status.OK
        if ok:  # the object goes out as feedback before the result, as the node does
            feedback.stage = ReasonSegmentAction.Feedback.STAGE_DECODING_MASK
            feedback.partial_answer = result.answer
            feedback.objects = list(result.objects)
            handle.publish_feedback(feedback)
            handle.succeed()
        else:
            handle.abort()
        return ReasonSegmentAction.Result(success=ok, result=result)


def main() -> None:
    rclpy.init()
    node = TrivialResponder(sys.argv[1])
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    print("ready", flush=True)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
