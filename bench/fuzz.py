#!/usr/bin/env python3
"""Fuzz the running node through DDS: odd and malformed requests (lisa_ros.testing.fuzzing) from
this process to a lisa_ros node in another, one after another. Prints what was sent, answered,
refused by code, the failures (no answer in time, MODEL_ERROR, a refusal without a message),
whether the node process is still alive, and the slowest answer. Exit status 1 on any failure.

    python bench/fuzz.py                  # 10,000 cases, tiny released-layout model (about 10 minutes)
    python bench/fuzz.py --cases 300      # the short form test/test_fuzz.py runs
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tqdm import tqdm

from lisa_ros.testing.checkpoints import model_or_tiny
from lisa_ros.testing.processes import die_with_parent, isolated_ros_environment, node_command

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="checkpoint folder (default: a tiny one written now)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds an answer may take")
    args = parser.parse_args(argv)

    domain = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(200, 214))
    env = isolated_ros_environment(domain, str(HERE.parent / "config" / "fastdds_localhost.xml"))
    os.environ.update(env)
    from lisa_ros.testing.fuzzing import fuzz_cases, fuzz_node_parameters, send_fuzz

    tmp = tempfile.TemporaryDirectory()
    model = model_or_tiny(args.model, tmp.name)
    params = {"model": model, "max_new_tokens": "16", **fuzz_node_parameters()}
    command = node_command(params)
    log = open(Path(tmp.name) / "node.log", "w")
    node_process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        from lisa_ros.msg import Status
        from lisa_ros.srv import ReasonSegment

        rclpy.init()
        node = rclpy.create_node("bench_fuzz_client")
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        service = node.create_client(ReasonSegment, "/lisa_ros/reason_segment")
        if not service.wait_for_service(timeout_sec=120):
            raise SystemExit("the node did not come up")
        deadline = time.monotonic() + 120  # NOT_READY while the model loads
        while time.monotonic() < deadline:
            future = service.call_async(ReasonSegment.Request(command="ping", camera="nope"))
            while not future.done():
                time.sleep(0.01)
            if future.result().result.status.code != Status.NOT_READY:
                break
            time.sleep(0.2)
        start = time.monotonic()
        progress = tqdm(total=args.cases, unit="request", desc="fuzzing")
        report = send_fuzz(node, fuzz_cases(args.cases, seed=args.seed), timeout_s=args.timeout,
                           on_answer=lambda *_: progress.update())
        progress.close()
        elapsed = time.monotonic() - start
        alive = node_process.poll() is None
    finally:
        node_process.terminate()
        node_process.wait(10)
        log.close()
    print(f"{args.cases} fuzz cases (seed {args.seed}) in {elapsed:.0f} s against "
          f"{'a tiny test-made model' if args.model is None else model}")
    for line in report.lines():
        print(line)
    print(f"node process alive at the end: {alive}")
    tmp.cleanup()
    return 0 if alive and not report.failures and report.answered == report.sent else 1


if __name__ == "__main__":
    sys.exit(main())
