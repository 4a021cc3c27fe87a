"""Test camera (not part of the package): publishes colour, registered depth and CameraInfo.

Usage: camera_publisher.py SPEC [SPEC ...] where SPEC is NAME:KIND[:once]
  KIND rgbd  -> /NAME/color/image_raw (rgb8 640x480), /NAME/depth/image_raw (32FC1: a plane at
                2.0 m with a NaN hole), /NAME/color/camera_info (fx 525, fy 520, cx 319.5, cy 239.5)
  KIND jpeg  -> /NAME/color/image_raw/compressed (jpeg 320x240)
  KIND mono  -> /NAME/color/image_raw (mono8 320x240)
  :once      -> publish 5 frames once a subscriber is there, then stay silent (stale-frame tests)
Frames go out at 15 Hz with sensor-data QoS, stamped with the current time, frame_id
NAME_color_optical_frame. Prints "ready" once publishing.
"""
from __future__ import annotations

import sys

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lisa_ros.ros.conversions import numpy_to_compressed, numpy_to_image

DEPTH_M = 2.0
K = [525.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("test_camera_publisher")
    rng = np.random.default_rng(0)
    streams = []
    for spec in sys.argv[1:]:
        name, kind, *rest = spec.split(":")
        frame_id = f"{name}_color_optical_frame"
        once = "once" in rest
        if kind == "rgbd":
            colour = numpy_to_image(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), "rgb8")
            depth_m = np.full((480, 640), DEPTH_M, np.float32)
            depth_m[200:260, 300:360] = np.nan  # a hole
            depth = numpy_to_image(depth_m, "32FC1")
            info = CameraInfo(width=640, height=480, k=K, distortion_model="plumb_bob")
            streams.append((once, [
                (node.create_publisher(Image, f"/{name}/color/image_raw", qos_profile_sensor_data), colour),
                (node.create_publisher(Image, f"/{name}/depth/image_raw", qos_profile_sensor_data), depth),
                (node.create_publisher(CameraInfo, f"/{name}/color/camera_info", qos_profile_sensor_data), info)]))
        elif kind == "jpeg":
            msg = numpy_to_compressed(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), "rgb8", "jpeg")
            streams.append((once, [(node.create_publisher(
                CompressedImage, f"/{name}/color/image_raw/compressed", qos_profile_sensor_data), msg)]))
        elif kind == "mono":
            msg = numpy_to_image(rng.integers(0, 255, (240, 320), dtype=np.uint8), "mono8")
            streams.append((once, [(node.create_publisher(Image, f"/{name}/color/image_raw",
                                                          qos_profile_sensor_data), msg)]))
        else:
            raise SystemExit(f"unknown camera kind {kind!r}")
        for _, message in streams[-1][1]:
            message.header.frame_id = frame_id
    sent = [0] * len(streams)

    def publish() -> None:
        stamp = node.get_clock().now().to_msg()
        for index, (once, publishers) in enumerate(streams):
            if once and (sent[index] >= 5 or publishers[0][0].get_subscription_count() == 0):
                continue
            for publisher, message in publishers:
                message.header.stamp = stamp  # colour and depth share the stamp (registered pair)
                publisher.publish(message)
            sent[index] += 1

    node.create_timer(1 / 15, publish)
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
