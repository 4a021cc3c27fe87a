"""`make demo` (examples/demo.py) runs the node end to end and exits 0 (camera, node, client)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_runs_end_to_end(ros_domain, tmp_path):
    from lisa_ros.model.tiny import write_tiny_lisa_checkpoint

    model = write_tiny_lisa_checkpoint(tmp_path / "lisa", emit_seg=True)
    run = subprocess.run([sys.executable, str(DEMO), "--model", str(model), "--out", str(tmp_path / "out")],
                         env=ros_domain.env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "while the answer is still being written" in run.stdout  # a mask arrived as feedback
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["masks"] and all((tmp_path / "out" / name).is_file() for name in result["masks"])
    assert (tmp_path / "out" / "debug_image.png").is_file()
