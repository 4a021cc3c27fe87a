"""Fuzzing the running node through DDS (issue 13): a few hundred odd and malformed requests
(lisa_ros.testing.fuzzing) from another process. Every one must be answered, success or a refusal
with its code and a message, never MODEL_ERROR, and the node must serve a good request after
them. bench/fuzz.py runs the same with 10,000 and more cases."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import rclpy
from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState
from rclpy.executors import MultiThreadedExecutor

from lisa_ros.ros.conversions import numpy_to_image
from lisa_ros.ros.spinning import spin
from lisa_ros.srv import ReasonSegment
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from lisa_ros.testing.fuzzing import FAMILIES, fuzz_cases, fuzz_node_parameters, send_fuzz

pytestmark = pytest.mark.ros
CASES = 300  # 30 of each family


@pytest.fixture(scope="module")
def fuzzed_node(module_ros_domain, module_spawn, tmp_path_factory):
    checkpoint = write_tiny_lisa_checkpoint(tmp_path_factory.mktemp("fuzz") / "lisa", emit_seg=True)
    params = {"model": str(checkpoint), "precision": "fp32", "max_new_tokens": "16", **fuzz_node_parameters()}
    args = ["--ros-args"] + [item for key, value in params.items() for item in ("-p", f"{key}:={value}")]
    process = module_spawn(module_ros_domain, "lisa_node_with_faults.py", *args, ready_timeout=90)
    node = rclpy.create_node("fuzz_client", context=module_ros_domain.context())
    executor = MultiThreadedExecutor(num_threads=2, context=module_ros_domain.context())
    executor.add_node(node)
    threading.Thread(target=spin, args=(executor,), daemon=True).start()
    get_state = node.create_client(GetState, "/lisa_ros/get_state")
    assert get_state.wait_for_service(timeout_sec=60)
    for _ in range(600):
        future = get_state.call_async(GetState.Request())
        while not future.done():
            threading.Event().wait(0.01)
        if future.result().current_state.id == State.PRIMARY_STATE_ACTIVE:
            break
        threading.Event().wait(0.1)
    yield node, process
    executor.shutdown()
    node.destroy_node()


def test_every_fuzz_case_is_answered_with_a_reason_and_the_node_keeps_serving(fuzzed_node):
    node, process = fuzzed_node
    cases = list(fuzz_cases(CASES, seed=13))
    assert {case.family for case in cases} == set(FAMILIES)
    report = send_fuzz(node, cases, timeout_s=60.0)
    assert report.sent + len(report.unsendable) == CASES and report.sent >= 0.9 * CASES, report.unsendable
    assert report.answered == report.sent, "\n".join(report.lines())
    assert not report.failures, "\n".join(report.lines())
    # Refusals of several kinds, and served requests: the cases reach past the first check.
    assert {"OK", "INVALID_IMAGE", "INVALID_COMMAND", "UNKNOWN_SESSION", "UNKNOWN_CAMERA"} <= set(report.by_code), \
        report.by_code
    assert process.proc.poll() is None, "the node process died"
    client = node.create_client(ReasonSegment, "/lisa_ros/reason_segment")
    image = numpy_to_image(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8), "rgb8")
    future = client.call_async(ReasonSegment.Request(command="where is the cup?", image=image))
    event = threading.Event()
    future.add_done_callback(lambda _: event.set())
    assert event.wait(60) and future.result().success, future.result().result.status.message
