#!/usr/bin/env python3
"""Soak: the node for a long time under a full-rate RGB-D camera and four clients.

Three processes over DDS: the lisa_ros node; an RGB-D camera (this script with --role camera:
rgb8 colour, 32FC1 registered depth and CameraInfo, sensor-data QoS) at --size and --rate; and
this client, with four clients in threads, each sending back to back:

1. service, masks only, on the camera's latest frame;
2. service with an explanation, in sessions of three turns;
3. action, with feedback;
4. action, cancelled after a random 0-0.5 s (cancels while running and while queued).

Prints requests sent, answered (by code) and lost (no answer within --timeout), the latency
p50/p99 of served requests, the node's image-callback p99 and the frames it missed, and the
node's RSS (read every 10 s, and its growth in the second half: a leak keeps growing, warm-up
levels off) and thread count after the warm-up and at the end. Exit status 1 when a request was
lost, RSS grew 5 % or more after the warm-up, or the thread count changed.

    python bench/soak.py                          # 10 minutes, 1920x1080 at 30 Hz, tiny model
    python bench/soak.py --seconds 20 --size 640x480 --rate 15     # the short form CI runs
    python bench/soak.py --seconds 1800 --warmup 120 --encode-ahead   # 30 minutes, encode_ahead on
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lisa_ros.testing.checkpoints import model_or_tiny
from lisa_ros.testing.processes import die_with_parent, isolated_ros_environment, node_command

HERE = Path(__file__).resolve().parent
TOPIC = "/soak"
RSS_SAMPLE_S = 10.0  # seconds between readings of the node's RSS


def run_camera(size: str, rate: float) -> int:
    """--role camera: publish colour, depth and camera_info until killed."""
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from lisa_ros.ros.conversions import numpy_to_image

    width, height = map(int, size.split("x"))
    rclpy.init()
    node = rclpy.create_node("soak_camera")
    colour = numpy_to_image(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8), "rgb8")
    depth = numpy_to_image(np.full((height, width), 1.5, np.float32), "32FC1")
    info = CameraInfo(width=width, height=height, k=[width * 0.8, 0, width / 2, 0, width * 0.8, height / 2, 0, 0, 1])
    publishers = [(node.create_publisher(Image, f"{TOPIC}/color/image_raw", qos_profile_sensor_data), colour),
                  (node.create_publisher(Image, f"{TOPIC}/depth/image_raw", qos_profile_sensor_data), depth),
                  (node.create_publisher(CameraInfo, f"{TOPIC}/color/camera_info", qos_profile_sensor_data), info)]
    published = 0
    start = time.monotonic()
    try:
        while True:
            stamp = node.get_clock().now().to_msg()
            for publisher, message in publishers:
                message.header.stamp, message.header.frame_id = stamp, "soak_color_optical_frame"
                publisher.publish(message)
            published += 1
            if published % int(max(rate, 1)) == 0:
                print(f"published {published}", flush=True)
            time.sleep(max(0.0, start + published / rate - time.monotonic()))
    except KeyboardInterrupt:
        return 0


def process_status(pid: int) -> tuple[float, int]:
    """(RSS in MiB, thread count) of process ``pid`` from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


class Tally:
    """Thread-safe counts and latencies of one run."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = self.lost = 0
        self.by_code: dict[str, int] = {}
        self.latencies: list[float] = []

    def add(self, code_name: str | None, seconds: float) -> None:
        with self.lock:
            if code_name is None:
                self.lost += 1
                return
            self.by_code[code_name] = self.by_code.get(code_name, 0) + 1
            if code_name == "OK":
                self.latencies.append(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "camera"), default="main")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the first RSS reading "
                        "(default: a fifth of --seconds, at most 60)")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--model", help="checkpoint folder (default: a tiny one written now)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds after which a request counts as lost")
    parser.add_argument("--encode-ahead", action="store_true", help="run the node with encode_ahead on (idle time "
                        "encodes the camera's newest frame)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.role == "camera":
        return run_camera(args.size, args.rate)
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 5)

    domain = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(180, 199))
    env = isolated_ros_environment(domain, str(HERE.parent / "config" / "fastdds_localhost.xml"))
    os.environ.update(env)
    tmp = tempfile.TemporaryDirectory()
    model = model_or_tiny(args.model, tmp.name)
    params = {"model": model, "max_new_tokens": "24", "queue_depth": "4", "max_frame_age": "0.0",
              "cameras": "['soak']", "soak.image_topic": f"{TOPIC}/color/image_raw",
              "soak.depth_topic": f"{TOPIC}/depth/image_raw", "soak.camera_info_topic": f"{TOPIC}/color/camera_info",
              "encode_ahead": str(args.encode_ahead).lower()}
    command = node_command(params)
    node_process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=die_with_parent)
    camera = subprocess.Popen([sys.executable, __file__, "--role", "camera", "--size", args.size, "--rate",
                               str(args.rate)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, preexec_fn=die_with_parent)
    published: list[int] = [0]
    threading.Thread(target=lambda: [published.__setitem__(0, int(line.split()[1])) for line in camera.stdout],
                     daemon=True).start()
    tally = Tally()
    try:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.action import ActionClient
        from rclpy.executors import MultiThreadedExecutor

        from lisa_ros.action import ReasonSegment as ReasonSegmentAction
        from lisa_ros.srv import ReasonSegment

        from lisa_ros.ros.qos import REQUEST_QOS, action_qos
        from lisa_ros.ros.messages import STATUS_NAMES
        from lisa_ros.ros.serving import SERVED_CODES, Codes
        rclpy.init()
        node = rclpy.create_node("soak_client")
        diagnostics: list = []
        node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        service = node.create_client(ReasonSegment, "/lisa_ros/reason_segment", qos_profile=REQUEST_QOS)
        action = ActionClient(node, ReasonSegmentAction, "/lisa_ros/reason_segment", **action_qos())
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        if not service.wait_for_service(timeout_sec=120) or not action.wait_for_server(timeout_sec=60):
            raise SystemExit("the node did not come up")

        def wait(future, timeout):
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.005)
            return future.result() if future.done() else None

        deadline = time.monotonic() + 120  # the model loads, the first frames arrive
        while time.monotonic() < deadline:
            response = wait(service.call_async(ReasonSegment.Request(command="ping")), 30)
            if response is not None and response.result.status.code not in (Codes.NOT_READY, Codes.NO_FRAME):
                break
            time.sleep(0.5)

        stop = threading.Event()

        def service_client(explain: bool):
            session, turn = "", 0
            while not stop.is_set():
                start = time.monotonic()
                response = wait(service.call_async(ReasonSegment.Request(
                    command="what should I use to reach the shelf?", explain=explain, session_id=session)), args.timeout)
                with tally.lock:
                    tally.sent += 1
                tally.add(None if response is None else STATUS_NAMES.get(response.result.status.code, "?"), time.monotonic() - start)
                if explain and response is not None and response.result.status.code in SERVED_CODES:
                    turn += 1
                    session = response.result.session_id if turn % 3 else ""

        def action_client(cancel: bool):
            rng = random.Random(7 if cancel else 8)
            while not stop.is_set():
                start = time.monotonic()
                with tally.lock:
                    tally.sent += 1
                handle = wait(action.send_goal_async(ReasonSegmentAction.Goal(command="where is the cup?"),
                                                     feedback_callback=lambda _feedback: None), args.timeout)
                if handle is None or not handle.accepted:
                    tally.add(None if handle is None else "REJECTED", time.monotonic() - start)
                    continue
                result_future = handle.get_result_async()
                if cancel:
                    time.sleep(rng.uniform(0.0, 0.5))
                    handle.cancel_goal_async()
                outcome = wait(result_future, args.timeout)
                tally.add(None if outcome is None else STATUS_NAMES.get(outcome.result.result.status.code, "?"),
                          time.monotonic() - start)

        threads = [threading.Thread(target=service_client, args=(False,)),
                   threading.Thread(target=service_client, args=(True,)),
                   threading.Thread(target=action_client, args=(False,)),
                   threading.Thread(target=action_client, args=(True,))]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        rss_start, threads_start = process_status(node_process.pid)
        frames_start, received_start = published[0], _camera_figure(diagnostics, "frames")
        rss_series = [(round(time.monotonic() - started), rss_start)]  # (s since start, MiB)
        while time.monotonic() - started < args.seconds:
            time.sleep(min(RSS_SAMPLE_S, max(0.0, args.seconds - (time.monotonic() - started))))
            rss_series.append((round(time.monotonic() - started), process_status(node_process.pid)[0]))
        stop.set()
        for thread in threads:
            thread.join(args.timeout + 10)
        elapsed = time.monotonic() - started
        time.sleep(1.5)  # one more diagnostics message
        rss_end, threads_end = process_status(node_process.pid)
        callback_p99 = _camera_figure(diagnostics, "callback_latency_p99_ms")
        frames_end, received_end = published[0], _camera_figure(diagnostics, "frames")
        alive = node_process.poll() is None
    finally:
        for process in (camera, node_process):
            process.terminate()
            process.wait(10)
        tmp.cleanup()

    latencies = sorted(tally.latencies)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
    answered = sum(tally.by_code.values())
    missed = (frames_end - frames_start) - (received_end - received_start)
    growth = (rss_end - rss_start) / rss_start * 100
    # Growth in the second half of the measured time: a leak keeps growing, warm-up levels off.
    half = rss_series[len(rss_series) // 2][1]
    late_growth = (rss_series[-1][1] - half) / half * 100
    figures = {"seconds": round(elapsed, 1), "camera": f"{args.size}@{args.rate:g}Hz rgbd",
               "encode_ahead": args.encode_ahead, "sent": tally.sent,
               "answered": answered, "lost": tally.lost, "by_code": tally.by_code, "latency_p50_s": round(p50, 3),
               "latency_p99_s": round(p99, 3), "image_callback_p99_ms": callback_p99,
               "frames_published_after_warmup": frames_end - frames_start, "frames_missed_after_warmup": missed,
               "rss_mib": [round(rss_start, 1), round(rss_end, 1)], "rss_growth_pct": round(growth, 2),
               "rss_series_mib": [[t, round(m, 1)] for t, m in rss_series],
               "rss_growth_second_half_pct": round(late_growth, 2),
               "threads": [threads_start, threads_end], "node_alive": alive}
    print(f"soak: {elapsed:.0f} s, camera {figures['camera']}, model "
          f"{'tiny (test-made)' if args.model is None else model}, 4 clients, encode_ahead {args.encode_ahead}")
    print(f"requests: sent {tally.sent}, answered {answered}, lost {tally.lost}; by code "
          + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_code.items())))
    print(f"served latency: p50 {p50:.3f} s, p99 {p99:.3f} s; image callback p99 {callback_p99:.1f} ms")
    print(f"frames after warm-up: published {frames_end - frames_start}, missed by the node {missed}")
    print(f"node RSS {rss_start:.1f} -> {rss_end:.1f} MiB ({growth:+.2f} %), threads {threads_start} -> {threads_end}, "
          f"alive {alive}")
    step = max(1, len(rss_series) // 10)
    print("node RSS over time (s: MiB): " + ", ".join(f"{t}: {m:.0f}" for t, m in rss_series[::step])
          + f"; growth in the second half {late_growth:+.2f} %")
    if args.json:
        print(json.dumps(figures))
    ok = alive and tally.lost == 0 and growth < 5.0 and threads_start == threads_end
    return 0 if ok else 1


def _camera_figure(diagnostics: list, key: str) -> float:
    for array in reversed(diagnostics):
        for status in array.status:
            if status.name.endswith("camera soak"):
                values = {kv.key: kv.value for kv in status.values}
                if key in values:
                    return float(values[key])
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
