#!/usr/bin/env python3
"""End-to-end demo: a synthetic RGB-D camera, the lisa_ros node and a client, in three processes.

    make demo            (or: python examples/demo.py [--model FOLDER_OR_HUB_ID])

Without --model, the node runs a small model written here in the released LISA layout with random
weights (no real weights can be downloaded on the project's machines): every stage runs for real,
camera -> DDS -> node -> LISA -> masks, 3D, topics -> client, but the answers are meaningless.
Results go to demo_out/: result.json, the masks, and the node's debug image.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from lisa_ros.processes import die_with_parent

ROOT = Path(__file__).resolve().parent.parent



def run_camera() -> None:
    """A table-top scene at 10 Hz: colour, registered depth (table plane, closer objects), CameraInfo."""
    import cv2
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from lisa_ros.ros.conversions import numpy_to_image

    rgb = np.full((480, 640, 3), (200, 190, 170), np.uint8)
    depth = np.full((480, 640), 1.6, np.float32)
    cv2.rectangle(rgb, (0, 300), (639, 479), (120, 85, 60), -1)      # table
    depth[300:] = np.linspace(1.2, 0.8, 180)[:, None]
    cv2.rectangle(rgb, (80, 180), (200, 330), (40, 90, 200), -1)     # a box
    depth[180:330, 80:200] = 1.0
    cv2.circle(rgb, (420, 300), 45, (220, 40, 40), -1)               # a red cup
    cup = np.zeros((480, 640), np.uint8)
    cv2.circle(cup, (420, 300), 45, 1, -1)
    depth[cup > 0] = 0.95
    depth[10:40, 600:630] = np.nan                                   # a hole
    rclpy.init()
    node = rclpy.create_node("demo_camera")
    frame = "demo_color_optical_frame"
    colour_msg, depth_msg = numpy_to_image(rgb, "rgb8"), numpy_to_image(depth, "32FC1")
    info = CameraInfo(width=640, height=480, k=[525.0, 0, 319.5, 0, 525.0, 239.5, 0, 0, 1])
    publishers = [(node.create_publisher(Image, "/demo/color/image_raw", qos_profile_sensor_data), colour_msg),
                  (node.create_publisher(Image, "/demo/depth/image_raw", qos_profile_sensor_data), depth_msg),
                  (node.create_publisher(CameraInfo, "/demo/color/camera_info", qos_profile_sensor_data), info)]

    def publish():
        stamp = node.get_clock().now().to_msg()
        for publisher, message in publishers:
            message.header.stamp, message.header.frame_id = stamp, frame
            publisher.publish(message)

    node.create_timer(0.1, publish)
    try:
        rclpy.spin(node)
    except Exception:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "camera"), default="main")
    parser.add_argument("--model", help="LISA checkpoint folder or hub id (default: a test-made one)")
    parser.add_argument("--out", default="demo_out")
    args = parser.parse_args(argv)
    if args.role == "camera":
        run_camera()
        return 0

    env = dict(os.environ, ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID") or str(random.randint(215, 232)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
               PYTHONUNBUFFERED="1")
    from lisa_ros.resources import config_path

    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_path("fastdds_localhost.xml"))
    os.environ.update(env)
    model = args.model
    if model is None:
        from lisa_ros.model.tiny import write_tiny_lisa_checkpoint

        folder = ROOT / ".demo" / "lisa-tiny"
        if not (folder / "config.json").is_file():
            print("writing a small test model in the released LISA layout (random weights) ...", flush=True)
            write_tiny_lisa_checkpoint(folder, emit_seg=True)
        model = str(folder)
    print(f"starting the node (model {model}), a synthetic RGB-D camera and a client; "
          f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}", flush=True)
    node = subprocess.Popen(
        [sys.executable, "-m", "lisa_ros.ros.node", "--ros-args", "-p", f"model:={model}",
         "-p", "camera.image_topic:=/demo/color/image_raw", "-p", "camera.depth_topic:=/demo/depth/image_raw",
         "-p", "camera.camera_info_topic:=/demo/color/camera_info", "-p", "max_new_tokens:=24",
         # The demo camera shares two busy cores with the model: tolerate its stalls.
         "-p", "max_frame_age:=5.0"],
        env=env, preexec_fn=die_with_parent)
    camera = subprocess.Popen([sys.executable, __file__, "--role", "camera"], env=env, preexec_fn=die_with_parent)
    try:
        return client(Path(args.out))
    finally:
        for process in (camera, node):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def client(out: Path) -> int:
    import cv2
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from lisa_ros.action import ReasonSegment as ReasonSegmentAction
    from lisa_ros.ros.conversions import image_to_numpy
    from lisa_ros.srv import ReasonSegment

    rclpy.init()
    node = rclpy.create_node("demo_client")
    debug_images: list = []
    node.create_subscription(Image, "/lisa_ros/debug_image", debug_images.append, qos_profile_sensor_data)
    service = node.create_client(ReasonSegment, "/lisa_ros/reason_segment")
    action = ActionClient(node, ReasonSegmentAction, "/lisa_ros/reason_segment")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    def wait(future, timeout=120.0):
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return future.result()

    if not service.wait_for_service(timeout_sec=120):
        print("the node did not come up", file=sys.stderr)
        return 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the node is active and has a camera frame
        probe = wait(service.call_async(ReasonSegment.Request(command="ping")))
        if probe.success or probe.error_code not in (ReasonSegment.Response.NOT_READY, ReasonSegment.Response.NO_FRAME):
            break
        time.sleep(0.5)

    command = "What should I use to drink some water? Please output segmentation mask and explain why."
    print(f"\n> {command}  (action: feedback as the model works)")
    started = time.monotonic()

    def show(message):
        f = message.feedback
        if f.mask_index >= 0:
            print(f"  [{f.elapsed:5.2f} s] mask #{f.mask_index} ready (score {f.score:.2f}, centroid "
                  f"z={f.centroid.z:.2f} m) while the answer is still being written", flush=True)
        elif f.stage != "generating":
            print(f"  [{f.elapsed:5.2f} s] {f.stage}", flush=True)

    handle = wait(action.send_goal_async(ReasonSegmentAction.Goal(command=command, explain=True), feedback_callback=show))
    outcome = wait(handle.get_result_async()).result
    result = outcome.result
    print(f"  answer after {time.monotonic() - started:.2f} s: success={outcome.success} {outcome.message!r}")
    print(f"  text: {result.answer!r}")
    for index, (score, box, centroid) in enumerate(zip(result.scores, result.boxes, result.centroids)):
        print(f"  mask #{index}: score {score:.2f}, box x={box.x_offset} y={box.y_offset} w={box.width} "
              f"h={box.height}, centroid ({centroid.x:.2f}, {centroid.y:.2f}, {centroid.z:.2f}) m in "
              f"{result.header.frame_id}")
    follow = wait(service.call_async(ReasonSegment.Request(command="and where can I put it down?",
                                                           session_id=result.session_id)))
    print(f"\n> and where can I put it down?  (service, same session)\n  success={follow.success} "
          f"masks={len(follow.result.masks)} session={follow.result.session_id == result.session_id}")
    bad = wait(service.call_async(ReasonSegment.Request(command="where?", camera="no_such_camera")))
    print(f"\n> a request for an unknown camera\n  success={bad.success} error_code={bad.error_code} "
          f"message={bad.message!r}")

    out.mkdir(parents=True, exist_ok=True)
    names = []
    for index, mask in enumerate(result.masks):
        names.append(f"mask_{index}.png")
        cv2.imwrite(str(out / names[-1]), image_to_numpy(mask))
    time.sleep(0.5)
    if debug_images:
        cv2.imwrite(str(out / "debug_image.png"), cv2.cvtColor(image_to_numpy(debug_images[-1]), cv2.COLOR_RGB2BGR))
    (out / "result.json").write_text(json.dumps({
        "command": command, "answer": result.answer, "explanation": result.explanation, "masks": names,
        "scores": list(result.scores), "centroids": [[c.x, c.y, c.z] for c in result.centroids],
        "timings": {k: getattr(result.timings, k) for k in ("total", "queue_wait", "preprocess", "image_encoding",
                                                           "generation", "mask_decoding", "postprocess")},
    }, indent=2))
    print(f"\nsaved {out}/result.json, {len(names)} mask(s)" + (" and debug_image.png" if debug_images else ""))
    print("(test-made random model: the pipeline is real, the answers are not meaningful)")
    action.destroy()
    executor.shutdown()
    rclpy.try_shutdown()
    return 0 if outcome.success and follow.success and not bad.success else 1


if __name__ == "__main__":
    sys.exit(main())
