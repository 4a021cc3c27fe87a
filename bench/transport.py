#!/usr/bin/env python3
"""Camera-image transport between two processes on one machine: frames delivered and latency.

Publishes N sensor_msgs/Image frames (rgb8, default 1920x1080 at 15 Hz) from one process to a
subscriber in another, for each Fast DDS profile and QoS asked for, and prints one row per case:
frames delivered, mean/p50/p99 latency (publish stamp -> callback, same clock). This is why
lisa_ros ships config/fastdds*.xml: without a large shared-memory segment, big images over the
best-effort QoS that camera drivers use are mostly lost.

    python bench/transport.py                      # the full matrix
    python bench/transport.py --cases localhost:best_effort --json   # one case, JSON out
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lisa_ros.resources import PROFILE_VARIABLES, dds_profile_variables
from lisa_ros.testing.processes import die_with_parent

PROFILES = {"default": None, "localhost": "fastdds_localhost.xml", "robot": "fastdds.xml"}
QOS = ("best_effort", "reliable")


def _qos(name: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if name == "best_effort":
        return qos_profile_sensor_data  # what camera drivers publish with (REP 2003)
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


def run_subscriber(args) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("transport_bench_subscriber")
    latencies: list[float] = []

    def on_image(msg: Image) -> None:
        now = time.time()
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append(now - sent)

    node.create_subscription(Image, args.topic, on_image, _qos(args.qos))
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    # The main process writes a line to our stdin once the publisher has finished.
    while time.monotonic() < deadline and len(latencies) < args.frames:
        rclpy.spin_once(node, timeout_sec=0.1)
        if select.select([sys.stdin], [], [], 0)[0]:
            sys.stdin.readline()
            end = time.monotonic() + 2.0  # frames still in flight
            while time.monotonic() < end and len(latencies) < args.frames:
                rclpy.spin_once(node, timeout_sec=0.1)
            break
    ms = sorted(v * 1e3 for v in latencies)
    summary = {
        "received": len(ms),
        "mean_ms": statistics.fmean(ms) if ms else None,
        "p50_ms": ms[len(ms) // 2] if ms else None,
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else None,
    }
    print("RESULT " + json.dumps(summary), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_publisher(args) -> None:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("transport_bench_publisher")
    publisher = node.create_publisher(Image, args.topic, _qos(args.qos))
    width, height = (int(v) for v in args.size.split("x"))
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.data = np.random.default_rng(0).integers(0, 255, height * width * 3, dtype=np.uint8).tobytes()
    msg.header.frame_id = "camera_color_optical_frame"
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)  # let both sides finish matching before the first frame
    period = 1.0 / args.rate
    next_time = time.monotonic()
    for _ in range(args.frames):
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        publisher.publish(msg)
        next_time += period
        time.sleep(max(0.0, next_time - time.monotonic()))
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()


def _config_dir() -> Path:
    try:
        from lisa_ros.resources import config_path

        return config_path("fastdds.xml").parent
    except Exception:
        return Path(__file__).resolve().parent.parent / "config"



def run_case(profile: str, qos: str, args) -> dict:
    env = dict(os.environ)  # keeps the LD_LIBRARY_PATH set by the ROS wheels' bootstrap
    env["ROS_DOMAIN_ID"] = str(args.domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    for key in PROFILE_VARIABLES + ("ROS_DISCOVERY_SERVER", "ROS_STATIC_PEERS", "FASTDDS_BUILTIN_TRANSPORTS",
                                    "FASTDDS_ENVIRONMENT_FILE"):
        env.pop(key, None)  # measure exactly the profile asked for
    if PROFILES[profile]:
        env.update(dds_profile_variables(_config_dir() / PROFILES[profile]))
    topic = f"/transport_bench_{os.getpid()}_{profile}_{qos}"
    common = ["--topic", topic, "--qos", qos, "--frames", str(args.frames), "--rate", str(args.rate),
              "--size", args.size, "--timeout", str(args.timeout)]
    me = [sys.executable, str(Path(__file__).resolve())]
    subscriber = subprocess.Popen(me + ["--role", "subscribe"] + common, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  preexec_fn=die_with_parent)
    output = [subscriber.stdout.readline()]
    if output[0].strip() != "ready":
        subscriber.kill()
        raise RuntimeError("subscriber failed: " + "".join(output) + subscriber.stdout.read())
    publisher = subprocess.Popen(me + ["--role", "publish"] + common, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                 preexec_fn=die_with_parent)
    publisher.wait(timeout=args.timeout + 60)
    rest, _ = subscriber.communicate("publisher done\n", timeout=args.timeout + 60)
    output.append(rest)
    lines = [line for line in "".join(output).splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError("subscriber printed no result:\n" + "".join(output))
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(profile=profile, qos=qos, sent=args.frames, size=args.size, rate_hz=args.rate)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "subscribe", "publish"), default="main")
    parser.add_argument("--cases", nargs="*", default=[f"{p}:{q}" for p in ("default", "localhost") for q in QOS],
                        help="PROFILE:QOS pairs; profiles: default (no XML), localhost, robot")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--topic", default="/transport_bench")
    parser.add_argument("--qos", choices=QOS, default="best_effort")
    parser.add_argument("--domain-id", type=int,
                        default=int(os.environ.get("ROS_DOMAIN_ID") or random.randint(215, 232)))
    parser.add_argument("--json", action="store_true", help="print one JSON object per case")
    args = parser.parse_args(argv)
    if args.role == "subscribe":
        run_subscriber(args)
        return 0
    if args.role == "publish":
        run_publisher(args)
        return 0
    if not args.json:
        print(f"{args.size} rgb8 at {args.rate:g} Hz, {args.frames} frames, two processes, one machine "
              f"(ROS_DOMAIN_ID={args.domain_id})")
        print(f"{'profile':<10} {'qos':<12} {'delivered':>10} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for case in args.cases:
        profile, qos = case.split(":")
        result = run_case(profile, qos, args)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            fmt = lambda v: f"{v:8.1f}" if v is not None else f"{'-':>8}"  # noqa: E731
            print(f"{profile:<10} {qos:<12} {result['received']:>4}/{result['sent']:<5} "
                  f"{fmt(result['mean_ms'])} {fmt(result['p50_ms'])} {fmt(result['p99_ms'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
