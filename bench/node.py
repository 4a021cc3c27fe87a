#!/usr/bin/env python3
"""The node under load: image callbacks during inference, and the node's overhead per request.

Three processes over DDS on one machine: the lisa_ros node, a 1920x1080 rgb8 camera at 30 Hz
(bench/transport.py's publisher, sensor-data QoS) and this client. Phase 1: the camera runs and
no request is made (idle). Phase 2: the client sends requests back to back on the camera's
latest frame, so inference runs all the time. For each phase the node's own diagnostics give
the image-callback latency (frame stamp -> callback) and the frames received; the client gives
the per-request overhead: round trip minus the model's time (image encoding + generation +
mask decoding), i.e. queueing, image conversion, 3D, message building, publishing and DDS.

    python bench/node.py                       # tiny released-layout model, about 40 s
    python bench/node.py --model /models/LISA-7B-v1 --quantization 4bit
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lisa_ros.testing.processes import die_with_parent, isolated_ros_environment

HERE = Path(__file__).resolve().parent



def camera_diagnostics(received: list, camera: str) -> dict:
    for array in reversed(received):
        for status in array.status:
            if status.name.endswith(f"camera {camera}"):
                return {kv.key: kv.value for kv in status.values}
    return {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: a tiny one written now)")
    parser.add_argument("--quantization", default="none")
    parser.add_argument("--quantization-backend", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--phase-seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--rate", type=float, default=30.0)
    args = parser.parse_args(argv)

    domain = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(215, 232))
    env = isolated_ros_environment(domain, str(HERE.parent / "config" / "fastdds_localhost.xml"))
    for key, value in env.items():
        os.environ[key] = value
    tmp = tempfile.TemporaryDirectory()
    model = args.model
    if model is None:
        from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint

        model = str(write_tiny_lisa_checkpoint(Path(tmp.name) / "lisa", emit_seg=True))
    node = subprocess.Popen(
        [sys.executable, "-m", "lisa_ros.ros.node", "--ros-args", "-p", f"model:={model}",
         "-p", f"quantization:={args.quantization}", "-p", f"quantization_backend:={args.quantization_backend}", "-p", f"max_new_tokens:={args.max_new_tokens}",
         "-p", "stop_after_seg:=false", "-p", "camera.image_topic:=/bench/image", "-p", "max_frame_age:=0.0",
         "-p", "publish_debug_image:=false"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    frames = int(args.rate * (2 * args.phase_seconds + 4))
    camera = None
    try:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import MultiThreadedExecutor

        from lisa_ros.msg import Status
        from lisa_ros.ros.messages import duration_seconds
        from lisa_ros.ros.serving import SERVED_CODES
        from lisa_ros.srv import ReasonSegment

        rclpy.init()
        client_node = rclpy.create_node("bench_node_client")
        diagnostics: list = []
        client_node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        service = client_node.create_client(ReasonSegment, "/lisa_ros/reason_segment")
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(client_node)
        threading.Thread(target=executor.spin, daemon=True).start()
        if not service.wait_for_service(timeout_sec=120):
            raise SystemExit("the node did not come up")

        camera = subprocess.Popen(
            [sys.executable, str(HERE / "transport.py"), "--role", "publish", "--topic", "/bench/image",
             "--frames", str(frames), "--rate", str(args.rate), "--size", args.size, "--qos", "best_effort"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)

        def ask():
            future = service.call_async(ReasonSegment.Request(command="what should I use to reach the shelf?", explain=True))
            started = time.perf_counter()
            while not future.done():
                time.sleep(0.001)
            return time.perf_counter() - started, future.result()

        # wait for the model (the service answers NOT_READY while it loads) and frames, then the idle phase
        deadline = time.monotonic() + 120
        waiting = (Status.NOT_READY, Status.NO_FRAME)
        while time.monotonic() < deadline and ask()[1].result.status.code in waiting:
            time.sleep(0.2)
        time.sleep(args.phase_seconds)
        idle = camera_diagnostics(diagnostics, "camera")

        overheads, model_times, round_trips, mask_counts = [], [], [], []
        end = time.monotonic() + args.phase_seconds
        while time.monotonic() < end:
            round_trip, response = ask()
            if response.result.status.code not in SERVED_CODES:
                continue
            timings = response.result.timings
            model_time = sum(duration_seconds(getattr(timings, stage))
                             for stage in ("image_encoding", "generation", "mask_decoding"))
            round_trips.append(round_trip)
            model_times.append(model_time)
            mask_counts.append(len(response.result.objects))
            overheads.append(round_trip - model_time)
        time.sleep(1.5)  # one more diagnostics message covering the busy phase
        busy = camera_diagnostics(diagnostics, "camera")
        camera.wait(timeout=2 * args.phase_seconds + 60)  # it publishes exactly `frames` frames
        time.sleep(2.5)
        received = int(camera_diagnostics(diagnostics, "camera").get("frames", 0))
    finally:
        for process in (camera, node):
            if process is not None:
                process.terminate()
                process.wait(10)
        tmp.cleanup()

    print(f"{args.size} rgb8 camera at {args.rate:g} Hz; model {model if args.model else 'tiny (test-made)'}; "
          f"{len(round_trips)} requests in {args.phase_seconds:g} s of continuous inference")
    print(f"{'image callback latency (ms)':<32}{'idle':>10}{'during inference':>18}")
    for key in ("mean", "p99", "max"):
        print(f"{'  ' + key:<32}{float(idle[f'callback_latency_{key}_ms']):10.1f}"
              f"{float(busy[f'callback_latency_{key}_ms']):18.1f}")
    print(f"{'camera rate seen by the node (Hz)':<32}{float(idle['rate_hz']):10.1f}{float(busy['rate_hz']):18.1f}")
    print(f"frames received by the node over both phases: {received} of {frames} published "
          f"({(frames - received) / frames * 100:.1f}% dropped)")
    if round_trips:
        print(f"per request: round trip {statistics.fmean(round_trips) * 1e3:.1f} ms, model "
              f"{statistics.fmean(model_times) * 1e3:.1f} ms, node overhead {statistics.fmean(overheads) * 1e3:.1f} ms "
              f"(median {statistics.median(overheads) * 1e3:.1f} ms); {statistics.fmean(mask_counts):.1f} masks "
              f"of {args.size} per answer (each travels as a mono8 image in the response and on ~/result)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
