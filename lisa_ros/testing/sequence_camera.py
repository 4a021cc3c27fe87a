"""A camera that plays a moving scene (:mod:`lisa_ros.data.scenes.motion`) over ROS 2, with its ground truth.

For the track tests, the demo and anyone who wants to see ``~/track`` work without a camera:

    python -m lisa_ros.testing.sequence_camera --kind exit --index 0 --name seq

publishes at ``--fps`` (stamped with the current time, frame_id ``NAME_color_optical_frame``):
``/NAME/color/image_raw`` (rgb8), ``/NAME/depth/image_raw`` (32FC1 metres, registered),
``/NAME/color/camera_info`` and ``/NAME/target_mask`` (mono8, the target's visible pixels, the
same header as the colour frame: a test matches them by stamp). Sensor-data QoS, except the
ground truth (reliable). Prints the query on its first line, then "ready". ``--loop`` plays the
sequence again and again; ``--stop-after N`` goes silent after N frames (a camera that stops);
``--resize-after N`` sends frames at half the size from frame N on (a camera that changes
resolution).
"""
from __future__ import annotations

import argparse
import time


class SequenceCamera:
    """The publishers of one sequence camera on ``node`` (see the module docstring)."""

    def __init__(self, node, sequence, name: str):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        self.node, self.sequence, self.name = node, sequence, name
        self.frame_id = f"{name}_color_optical_frame"
        self.colour = node.create_publisher(Image, f"/{name}/color/image_raw", qos_profile_sensor_data)
        self.depth = node.create_publisher(Image, f"/{name}/depth/image_raw", qos_profile_sensor_data)
        self.info = node.create_publisher(CameraInfo, f"/{name}/color/camera_info", qos_profile_sensor_data)
        self.truth = node.create_publisher(Image, f"/{name}/target_mask", 30)

    def publish(self, index: int, scale: float = 1.0):
        """Frame ``index`` of the sequence (``scale``: resized by that factor), stamped now: the
        ground-truth mask first, then colour, depth and camera_info. Returns the colour header."""
        import cv2
        import numpy as np
        from sensor_msgs.msg import CameraInfo

        from lisa_ros.ros.conversions import mask_to_image, numpy_to_image

        sequence = self.sequence
        rgb, depth_m, mask = sequence.frames[index], sequence.depths[index], sequence.target_masks[index]
        if scale != 1.0:
            size = (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            depth_m = cv2.resize(depth_m, size, interpolation=cv2.INTER_NEAREST)
            mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        height, width = rgb.shape[:2]
        focal = sequence.focal_px * scale
        colour, depth = numpy_to_image(rgb, "rgb8"), numpy_to_image(depth_m.astype(np.float32), "32FC1")
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob",
                          k=[focal, 0.0, (width - 1) / 2, 0.0, focal, (height - 1) / 2, 0.0, 0.0, 1.0])
        stamp = self.node.get_clock().now().to_msg()
        for message in (colour, depth, info):
            message.header.stamp, message.header.frame_id = stamp, self.frame_id
        self.truth.publish(mask_to_image(mask, colour.header))
        self.colour.publish(colour)
        self.depth.publish(depth)
        self.info.publish(info)
        return colour.header


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="move", help="move | pan | occlusion | exit")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--split", default="test")
    parser.add_argument("--name", default="seq")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--resize-after", type=int, default=0)
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import ExternalShutdownException

    from lisa_ros.data.scenes.motion import make_moving_sequence

    width, height = (int(v) for v in args.size.split("x"))
    sequence = make_moving_sequence(args.seed, args.index, args.kind, args.split, (width, height), args.seconds,
                                    args.fps)
    print(sequence.query, flush=True)
    rclpy.init()
    node = rclpy.create_node(f"sequence_camera_{args.name}")
    camera = SequenceCamera(node, sequence, args.name)
    print("ready", flush=True)
    sent, start = 0, time.monotonic()
    try:
        while rclpy.ok():
            index = sent % len(sequence) if args.loop else min(sent, len(sequence) - 1)
            if not (args.stop_after and sent >= args.stop_after):
                camera.publish(index, 0.5 if args.resize_after and sent >= args.resize_after else 1.0)
            sent += 1
            time.sleep(max(0.0, start + sent / args.fps - time.monotonic()))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
