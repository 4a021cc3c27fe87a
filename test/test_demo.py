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
    import cv2

    overview = cv2.imread(str(out / "overview.png"))  # both overlays on one page, each with its command
    assert overview is not None and overview.shape[1] == 8 + 2 * (320 + 8) and overview.shape[0] > 200
    assert f"Pictures (prediction tinted, ground truth outlined in white): {out}" in run.stdout
    assert "[track] following" in run.stdout and (out / "track.gif").is_file()  # ~/track, drawn
    assert "OK: followed for its duration" in run.stdout and "(left the view)" in run.stdout

    # The tracking part is recorded (compressed transports, MCAP) with its ground truth by stamp,
    # and the replay command the demo prints answers and scores it offline.
    from lisa_ros.ros import bags

    reader = bags.open_bag(out / "recording")
    try:
        counts = {topic: info.msgcount for topic, info in reader.topics.items()}
    finally:
        reader.close()
    assert counts["/moving/color/image_raw/compressed"] >= 60 and counts["/moving/depth/image_raw/compressedDepth"] >= 60
    assert counts["/moving/color/camera_info"] >= 60 and counts["/lisa_ros/tracks"] >= 10, counts
    masks = sorted((out / "recording_masks").glob("*.png"))
    assert len(masks) >= counts["/moving/color/image_raw/compressed"]  # every published frame (DDS may drop some)
    import shlex

    # The printed command names the venv's lisa-ros, so it runs in a shell without the venv activated.
    [argv] = [shlex.split(line) for line in run.stdout.splitlines() if " replay " in line and "lisa-ros" in line]
    assert argv[0] == str(Path(sys.executable).parent / "lisa-ros") and argv[1] == "replay", argv
    argv[argv.index("--every") + 1] = "40"  # every 40th frame: a few answers
    replay = subprocess.run([*argv, "--no-progress"], env=ros_domain.env, capture_output=True, text=True, timeout=600)
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
    score = json.loads((out / "replay-score" / "score.json").read_text())["overall"]
    assert score["answered"] >= 2 and score["not_in_bag"] <= len(masks) - counts["/moving/color/image_raw/compressed"]
    assert score["answered"] + score["not_asked"] + score["not_in_bag"] == len(masks), score
    assert "gIoU" in replay.stdout and (out / "replay-score" / "iou.png").is_file()
