"""`make demo` (examples/demo.py) in its short form: camera, node (embedded model) and client,
end to end over DDS, exits 0 with overlays and results written, and a target followed with
~/track through leaving the view, drawn as track.gif."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_runs_end_to_end(ros_domain, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(DEMO), "--quick", "--out", str(out)],
                         env=ros_domain.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "while the answer is still being written" in run.stdout  # an object arrived as action feedback
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 and all(r["served"] for r in records)
    assert all((out / r["overlay"]).is_file() for r in records)
    assert f"Pictures (prediction tinted, ground truth outlined in white): {out}" in run.stdout
    assert "[track] following" in run.stdout and (out / "track.gif").is_file()  # ~/track, drawn
    assert "OK: followed for its duration" in run.stdout and "(left the view)" in run.stdout
