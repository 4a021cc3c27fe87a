"""Ask lisa_ros for a grasp target and hand it to a planner as a geometry_msgs/PoseStamped.

    python examples/grasp_target.py "what should I use to reach the shelf?" [--camera front]
        [--namespace robot1] [--topic grasp_target] [--timeout 60]

The node must have ``target_frame`` set (e.g. ``base_link``, the planning frame of MoveIt or nav2):
the pose then comes out in that frame, looked up in TF at the image's stamp. The chosen target is
the highest-scoring mask with enough depth points; its pose is the object's centroid with its
principal axes (x = longest side, z = the surface normal towards the camera), and its extent along
those axes is printed with it, so a grasp planner can pick an approach and a gripper width.
Without target_frame, or when TF fails (the reason is printed), the pose is in the camera's
optical frame. Prints one JSON line; publishes the pose once on ``--topic`` (transient local, for
0.5 s: a planner must already be listening) unless ``--topic ''``. Exit status 0 with a target, 1 without one, 2 on a failed request.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

MIN_POINTS = 50  # fewer depth points than this: the pose is too noisy to grasp


def choose(result) -> int | None:
    """Index of the best mask with a usable 3D pose, or None. (result.warnings, printed with the
    target, flag a degenerate mask or runaway [SEG]: a real planner should stop on them.)"""
    usable = [i for i, n in enumerate(result.valid_points) if n >= MIN_POINTS]
    return max(usable, key=lambda i: result.scores[i]) if usable else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command")
    parser.add_argument("--camera", default="", help="camera name ('' = the node's default)")
    parser.add_argument("--namespace", default="", help="the node's namespace, e.g. robot1")
    parser.add_argument("--topic", default="grasp_target", help="publish the pose here ('' = do not)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the answer")
    args = parser.parse_args(argv)

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile

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
                                                         timeout=args.timeout))
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout + 5.0)
        response = future.result()
        if response is None or not response.success:
            print(json.dumps({"error": response.message if response else "no answer in time"}))
            return 2
        result = response.result
        index = choose(result)
        if index is None:
            print(json.dumps({"answer": result.answer, "target": None,
                              "why": "no mask" if not result.masks else f"no mask with {MIN_POINTS}+ depth points"}))
            return 1
        pose = result.target_poses[index] if result.target_poses else result.poses[index]
        p, q, e = pose.pose.position, pose.pose.orientation, result.extents[index]
        print(json.dumps({"answer": result.answer, "frame_id": pose.header.frame_id,
                          "position": [p.x, p.y, p.z], "orientation_xyzw": [q.x, q.y, q.z, q.w],
                          "extent": [e.x, e.y, e.z], "valid_points": int(result.valid_points[index]),
                          "score": float(result.scores[index]), "transform_error": result.transform_error,
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
