"""The soak benchmark's short form (issue 13): bench/soak.py for 20 s with a 640x480 RGB-D camera
at 15 Hz and its four clients (service, explanations in sessions, action, cancelled actions).
Nothing may be lost, the node must stay up, and its thread count must not grow. (The RSS goal,
< 5 % growth after warm-up, is judged by the full 10-minute run in docs/RELIABILITY.md: 20 s is
too short to separate growth from warm-up.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
BENCH = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


def test_short_soak_loses_nothing_and_keeps_its_threads(ros_domain):
    run = subprocess.run([sys.executable, str(BENCH), "--seconds", "20", "--warmup", "5", "--size", "640x480",
                          "--rate", "15", "--json"], env=ros_domain.env, capture_output=True, text=True, timeout=400)
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["node_alive"] and figures["lost"] == 0 and figures["sent"] == figures["answered"], run.stdout
    assert figures["by_code"].get("OK", 0) > 0 and "MODEL_ERROR" not in figures["by_code"], figures
    assert figures["threads"][0] == figures["threads"][1], figures
