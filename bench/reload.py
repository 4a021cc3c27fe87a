#!/usr/bin/env python3
"""Reloads: does "cleanup frees the model" hold for the process? The node's RSS over N reloads.

Two processes over DDS: the lisa_ros node (the embedded model by default) and this client. Each
reload is what an operator does to change a load-time parameter: deactivate, cleanup, set
``precision`` (alternating fp32 and bf16, so the model is really rebuilt), configure, activate,
then one request about an image (so the reloaded model runs). The node's RSS is read from
/proc after each reload's request.

Prints RSS per reload and, per precision (the bf16 and fp32 models differ in size), the growth of
the mean of its last three readings over its first three; exits 1 when that is 5 % or more.
``--without-trim`` runs the node without its memory release (no fixed mmap threshold at start,
garbage collection alone at cleanup: what the node did before), for a comparison.

    python bench/reload.py                    # 10 reloads of the embedded model
    python bench/reload.py --without-trim     # the same, without malloc_trim at cleanup
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from lisa_ros.testing.processes import die_with_parent, isolated_ros_environment, node_command

HERE = Path(__file__).resolve().parent
# Runs the node without its memory release: glibc's default (dynamic) mmap threshold, and garbage
# collection alone at cleanup (--without-trim).
WITHOUT_TRIM = ("import gc, sys; import lisa_ros.ros.node as node; node.release_freed_memory = gc.collect; "
                "node.keep_large_blocks_out_of_the_heap = lambda: False; sys.exit(node.main())")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--without-trim", action="store_true",
                        help="run the node without its memory release (the behaviour before the fix)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)

    domain = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(180, 199))
    env = isolated_ros_environment(domain, str(HERE.parent / "config" / "fastdds_localhost.xml"))
    os.environ.update(env)
    command = node_command({"model": args.model, "precision": "fp32", "cameras": "['unused']",
                            "max_new_tokens": "24"})
    if args.without_trim:
        command = [sys.executable, "-c", WITHOUT_TRIM] + command[3:]
    node_process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=die_with_parent)
    import numpy as np
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import MultiThreadedExecutor

    from lisa_ros.data.scenes.generator import make_scene, scene_rng
    from lisa_ros.ros.conversions import numpy_to_image
    from lisa_ros.ros.qos import REQUEST_QOS
    from lisa_ros.srv import ReasonSegment

    rclpy.init()
    node = rclpy.create_node("reload_client")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    service = node.create_client(ReasonSegment, "/lisa_ros/reason_segment", qos_profile=REQUEST_QOS)
    change_state = node.create_client(ChangeState, "/lisa_ros/change_state")
    set_parameters = node.create_client(SetParameters, "/lisa_ros/set_parameters")

    def call(client, request, timeout=300.0):
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            raise SystemExit(f"no answer from {client.srv_name} in {timeout:g} s")
        return future.result()

    def transition(transition_id: int) -> None:
        request = ChangeState.Request()
        request.transition.id = transition_id
        if not call(change_state, request).success:
            raise SystemExit(f"transition {transition_id} failed")

    scene = make_scene(scene_rng(0, "test", 1), "roll", size=(480, 640))
    image = numpy_to_image(scene.rgb, "rgb8")

    def ask() -> str:
        result = call(service, ReasonSegment.Request(command=scene.query, image=image)).result
        return result.status.message if result.status.code not in (0, 1) else ""

    figures = {"reloads": [], "model": args.model, "without_trim": args.without_trim}
    try:
        for client in (service, change_state, set_parameters):
            if not client.wait_for_service(timeout_sec=120):
                raise SystemExit("the node did not come up")
        deadline = time.monotonic() + 300
        while (problem := ask()) and time.monotonic() < deadline:  # autostart: the model loads
            time.sleep(1.0)
        if problem:
            raise SystemExit(f"the node does not serve: {problem}")
        figures["before"] = round(rss_mib(node_process.pid), 1)
        print(f"loaded and served: RSS {figures['before']:.0f} MiB", flush=True)
        for index in range(1, args.reloads + 1):
            started = time.monotonic()
            transition(Transition.TRANSITION_DEACTIVATE)
            transition(Transition.TRANSITION_CLEANUP)
            precision = "bf16" if index % 2 else "fp32"
            value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=precision)
            if not call(set_parameters, SetParameters.Request(
                    parameters=[Parameter(name="precision", value=value)])).results[0].successful:
                raise SystemExit("precision could not be set")
            transition(Transition.TRANSITION_CONFIGURE)
            transition(Transition.TRANSITION_ACTIVATE)
            problem = ask()
            if problem:
                raise SystemExit(f"reload {index}: the request failed: {problem}")
            rss = rss_mib(node_process.pid)
            figures["reloads"].append(round(rss, 1))
            print(f"reload {index:2d} ({precision}): RSS {rss:7.1f} MiB, {time.monotonic() - started:.1f} s", flush=True)
    finally:
        node_process.terminate()
        node_process.wait(30)
        executor.shutdown()
        rclpy.try_shutdown()
    # Growth per precision (the bf16 and fp32 models differ in size): the mean of its last three
    # readings against the mean of its first three. One reading moves by +-5 % with where the
    # allocator happened to place things; a leak moves the means.
    growths = []
    for name, series in (("bf16", figures["reloads"][0::2]), ("fp32", figures["reloads"][1::2])):
        if not series:
            continue
        first, last = statistics.mean(series[:3]), statistics.mean(series[-3:])
        growths.append((last - first) / first * 100)
        print(f"{name} reloads: " + ", ".join(f"{m:.0f}" for m in series) + f" MiB; mean of the first three "
              f"{first:.0f}, of the last three {last:.0f} ({growths[-1]:+.2f} %)")
    growth = max(growths)
    figures["growth_after_first_reload_pct"] = round(growth, 2)
    print(f"RSS: loaded {figures['before']:.0f} MiB; growth after the first reloads: {growth:+.2f} % at most "
          f"({'without' if args.without_trim else 'with'} the node's memory release)")
    if args.json:
        print(json.dumps(figures))
    return 0 if growth < 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())
