"""lisa_ros.ros.diagnostics: what /diagnostics says about a camera input (in process; the node's
diagnostics over DDS are in test_node.py and test_camera_inputs.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from lisa_ros.ros.conversions import numpy_to_image
from lisa_ros.srv import ReasonSegment
from test_node import explicit_image

pytestmark = pytest.mark.ros
K = [525.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]


def test_a_camera_whose_depth_is_not_registered_is_a_diagnostics_warning():
    from diagnostic_msgs.msg import DiagnosticStatus

    from lisa_ros.ros import diagnostics
    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.request import RequestHandler, decode, frame_source

    camera = CameraInput("front")
    colour = explicit_image()
    depth = numpy_to_image(np.ones((60, 80), np.float32), "32FC1")
    depth.header = colour.header
    camera.on_color(colour)
    camera.on_depth(depth)
    source = frame_source(ReasonSegment.Request(command="x"), {"front": camera}, "front", 0.0)
    frame = decode(source, 10**6)
    assert frame.depth_m is None and "registered to colour" in frame.input_problem
    handler = RequestHandler(None, None, None, {"front": camera}, "front", 600.0, None, None)
    handler.note_inputs(source, frame)
    values = diagnostics.camera_values(camera, time.monotonic(), 0.0)  # the frame is stamped in 2025: no age check
    array = diagnostics.build("lisa_ros", None, "active", {}, diagnostics.RequestStats(), [values], {})
    status = array.status[-1]
    assert status.level == DiagnosticStatus.WARN and "registered to colour" in status.message


def test_camera_diagnostics_hold_the_rate_to_its_expected_value():
    from diagnostic_msgs.msg import DiagnosticStatus

    from lisa_ros.ros import diagnostics
    from lisa_ros.ros.cameras import CameraInput

    now = [100.0]
    wall = time.time()  # stamped in step with the node's clock: no clock problem
    frame = explicit_image(stamp=(int(wall), int(wall % 1 * 1e9)))
    frame.header.frame_id = "front_color_optical_frame"

    def camera_status(period_s: float, expected_hz: float):
        camera = CameraInput("front", clock=lambda: now[0], expected_rate_hz=expected_hz)
        for _ in range(30):
            now[0] += period_s
            camera.on_color(frame)
        values = diagnostics.camera_values(camera, now[0], 0.0)
        return diagnostics.build("lisa_ros", None, "active", {}, diagnostics.RequestStats(), [values], {}).status[-1]

    on_time = camera_status(1 / 30, 30.0)
    assert on_time.level == DiagnosticStatus.OK and on_time.hardware_id == "front_color_optical_frame"
    slow = camera_status(1 / 15, 30.0)  # a USB camera fallen back to half rate
    assert slow.level == DiagnosticStatus.WARN and "expected 30 Hz" in slow.message
    assert float({kv.key: kv.value for kv in slow.values}["jitter_ms"]) == pytest.approx(0.0, abs=1e-6)
    assert camera_status(1 / 15, 0.0).level == DiagnosticStatus.OK  # not checked
    import torch

    assert diagnostics.device_description(torch.device("cpu")).startswith("cpu ")
