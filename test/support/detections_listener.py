"""A vision_msgs consumer that knows nothing of lisa_ros (not part of the package): it imports only
rclpy and vision_msgs, subscribes to NODE/detections and NODE/detections_3d, and prints each
message as one JSON line (topic, stamp, frame_id, per detection id, class_id, score, box centre and
size), and once per topic "hash TOPIC RIHS01_..." with the type hash its publisher advertises.
Usage: detections_listener.py NODE (e.g. /lisa_ros). Prints "ready" once subscribed."""
from __future__ import annotations

import json
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from vision_msgs.msg import Detection2DArray, Detection3DArray


def summary(topic: str, message) -> str:
    detections = []
    for detection in message.detections:
        hypothesis = detection.results[0].hypothesis if detection.results else None
        if topic == "detections":
            box = detection.bbox
            centre, size = [box.center.position.x, box.center.position.y], [box.size_x, box.size_y]
        else:
            box = detection.bbox
            centre = [box.center.position.x, box.center.position.y, box.center.position.z]
            size = [box.size.x, box.size.y, box.size.z]
        detections.append({"id": detection.id, "class_id": hypothesis.class_id if hypothesis else None,
                           "score": hypothesis.score if hypothesis else None, "center": centre, "size": size})
    stamp = f"{message.header.stamp.sec}.{message.header.stamp.nanosec:09d}"
    return json.dumps({"topic": topic, "stamp": stamp, "frame_id": message.header.frame_id, "detections": detections})


def main() -> None:
    node_name = sys.argv[1].rstrip("/")
    rclpy.init()
    node = rclpy.create_node("detections_listener")
    hashed: set[str] = set()

    def on_message(topic: str):
        def callback(message) -> None:
            print(summary(topic, message), flush=True)
            if topic not in hashed:
                infos = node.get_publishers_info_by_topic(f"{node_name}/{topic}")
                if infos:
                    hashed.add(topic)
                    print(f"hash {topic} {infos[0].topic_type_hash}", flush=True)
        return callback

    node.create_subscription(Detection2DArray, f"{node_name}/detections", on_message("detections"), 10)
    node.create_subscription(Detection3DArray, f"{node_name}/detections_3d", on_message("detections_3d"), 10)
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
