"""Ask lisa_ros for a grasp target and hand it to a planner as a geometry_msgs/PoseStamped.

    python examples/grasp_target.py "what should I use to reach the shelf?" [--camera front]
        [--target-frame odom] [--namespace robot1] [--topic grasp_target] [--timeout 60]

``--target-frame`` (default: the node's ``target_frame`` parameter) is the frame the pose comes out
in, looked up in TF at the image's stamp: the planning frame of MoveIt (the arm's base) or a fixed
frame (``odom``) on a moving base, where a pose in ``base_link`` would be stale once the base moves.
The chosen target is the highest-scoring object with enough depth points; its pose is the object's
centroid with its principal axes (x = longest side, z = the surface normal towards the camera), and
its extent along those axes is printed with it, so a grasp planner can pick an approach and a
gripper width. Without a target frame, or when TF fails (``no_target_pose``; the reason is printed),
the pose is in the camera's optical frame. Prints one JSON line; publishes the pose once on
``--topic`` (transient local, for 0.5 s: a planner must already be listening) unless ``--topic ''``.
Exit status 0 with a target, 1 without one (NO_TARGET, or no object with enough depth), 2 on a
failed request.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

MIN_POINTS = 50  # fewer depth points than this: the pose is too noisy to grasp


def choose(result):
    """The best object with a usable 3D pose (a lisa_ros/SegmentedObject), or None.
    (result.warnings, printed with the target, flag a degenerate mask or runaway [SEG]: a real
    planner should stop on them.)"""
    usable = [obj for obj in result.objects if obj.valid_points >= MIN_POINTS]
    return max(usable, key=lambda obj: obj.score) if usable else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command")
    parser.add_argument("--camera", default="", help="camera name ('' = the node's default)")
    parser.add_argument("--target-frame", default="", help="frame for the pose ('' = the node's target_frame)")
    parser.add_argument("--namespace", default="", help="the node's namespace, e.g. robot1")
    parser.add_argument("--topic", default="grasp_target", help="publish the pose here ('' = do not)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the answer")
    args = parser.parse_args(argv)

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile

    from lisa_ros.msg import Status
    from lisa_ros.ros.messages import duration
    from lisa_ros.ros.qos import REQUEST_QOS
    from lisa_ros.srv import ReasonSegment

    rclpy.init()
    node = rclpy.create_node("grasp_target", namespace=args.namespace)
    try:
        client = node.create_client(ReasonSegment, "lisa_ros/reason_segment", qos_profile=REQUEST_QOS)
        if not client.wait_for_service(timeout_sec=30.0):
            print(json.dumps({"error": f"no service {client.srv_name}"}))
            return 2
        future = client.call_async(ReasonSegment.Request(command=args.command, camera=args.camera,
                                                         target_frame=args.target_frame,
                                                         timeout=duration(args.timeout)))
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout + 5.0)
        response = future.result()
        status = response.result.status if response is not None else None
        if status is None or status.code not in (Status.OK, Status.NO_TARGET):
            print(json.dumps({"error": status.message if status else "no answer in time"}))
            return 2
        result = response.result
        target = choose(result)
        if target is None:
            why = ("nothing fits the command" if status.code == Status.NO_TARGET
                   else f"no object with {MIN_POINTS}+ depth points")
            print(json.dumps({"answer": result.answer, "target": None, "why": why}))
            return 1
        pose = target.target_pose if target.target_pose.header.frame_id else target.pose
        p, q, e = pose.pose.position, pose.pose.orientation, target.extent
        print(json.dumps({"answer": result.answer, "id": target.id, "label": target.label,
                          "frame_id": pose.header.frame_id, "position": [p.x, p.y, p.z],
                          "orientation_xyzw": [q.x, q.y, q.z, q.w], "extent": [e.x, e.y, e.z],
                          "valid_points": int(target.valid_points), "score": float(target.score),
                          "no_target_pose": result.no_target_pose, "transform_error": result.transform_error,
                          "warnings": list(result.warnings)}))
        if args.topic and not any(math.isnan(v) for v in (p.x, p.y, p.z)):
            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            publisher = node.create_publisher(PoseStamped, args.topic, latched)
            publisher.publish(pose)
            time.sleep(0.5)  # let late-joining subscribers match before this process ends
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
