"""`lisa-ros segment` and `lisa-ros chat` end to end on a released-layout checkpoint made here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lisa_ros.cli import main
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from lisa_ros.timing import STAGES

LISA_ROS = str(Path(sys.executable).parent / "lisa-ros")
# result.json's keys as docs/INTERFACES.md lists them, for `lisa-ros segment` and `lisa-ros ask`
# alike (test_node checks the node's side).
ASK_RESULT_KEYS = ("success", "status", "command", "answer", "explanation", "session_id", "generated_tokens",
                   "frame_id", "stamp", "image_size", "target_frame", "transform_error", "no_3d", "no_target_pose",
                   "points", "objects", "warnings", "timings")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # emit_seg: the random model says [SEG] where it would say its favourite words.
    return write_tiny_lisa_checkpoint(tmp_path_factory.mktemp("cli") / "lisa", emit_seg=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "kitchen.png"
    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    cv2.imwrite(str(path), rgb)
    return path


def test_segment_writes_masks_overlay_and_result(checkpoint, image, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([LISA_ROS, "segment", "--model", str(checkpoint), "--image", str(image),
                          "--prompt", "what should I use to reach the shelf?", "--out", str(out),
                          "--max-new-tokens", "12", "--explain"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert set(result) == set(ASK_RESULT_KEYS)  # the format `lisa-ros ask` writes (lisa_ros.result_file)
    assert result["command"] == "what should I use to reach the shelf?" and result["image_size"] == [120, 160]
    assert result["objects"] and result["answer"].count("[SEG]") == len(result["objects"])
    assert result["success"] and result["status"]["name"] == "OK" and result["status"]["code"] == 0
    for obj in result["objects"]:
        mask = cv2.imread(str(out / obj["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (120, 160) and set(np.unique(mask)) <= {0, 255}
        assert len(obj["box"]) == 4 and 0 <= obj["score"] <= 1 and obj["pose"] is None
    overlay = cv2.imread(str(out / "overlay.png"))
    assert overlay.shape == (120, 160, 3)
    timings = result["timings"]
    assert list(timings) == list(STAGES) and timings["queue_wait"] == 0
    assert timings["image_encoding"] > 0 and timings["generation"] > 0 and timings["mask_decoding"] > 0
    assert timings["total"] >= timings["image_encoding"] + timings["generation"]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == result


def test_segment_without_a_mask_says_no_target_and_exits_3(checkpoint, image, tmp_path):
    """One token allowed: the answer is cut before any [SEG] (as `lisa-ros ask`: exit 3, NO_TARGET)."""
    out = tmp_path / "out"
    run = subprocess.run([LISA_ROS, "segment", "--model", str(checkpoint), "--image", str(image), "--prompt", "where?",
                          "--out", str(out), "--max-new-tokens", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 3, run.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert not result["success"] and result["status"]["name"] == "NO_TARGET" and result["objects"] == []
    assert "max_new_tokens" in result["status"]["message"]


@pytest.mark.parametrize("case,expected", [
    ("missing_image", "does not exist"),
    ("not_an_image", "cannot read"),
    ("bad_model", "does not exist"),
    ("not_lisa", "no config.json"),
    ("empty_prompt", "empty"),
])
def test_segment_errors_are_one_clear_line(checkpoint, image, tmp_path, capsys, case, expected):
    args = {"--model": str(checkpoint), "--image": str(image), "--prompt": "where?", "--out": str(tmp_path / "o")}
    if case == "missing_image":
        args["--image"] = str(tmp_path / "nope.png")
    elif case == "not_an_image":
        (tmp_path / "fake.png").write_text("this is text")
        args["--image"] = str(tmp_path / "fake.png")
    elif case == "bad_model":
        args["--model"] = str(tmp_path / "no-model")
    elif case == "not_lisa":
        (tmp_path / "empty-model").mkdir()
        args["--model"] = str(tmp_path / "empty-model")
    elif case == "empty_prompt":
        args["--prompt"] = "  "
    code = main(["segment"] + [item for pair in args.items() for item in pair])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("lisa-ros: error:") and expected in err[-1]


def test_chat_keeps_the_conversation_and_writes_each_turn(checkpoint, image, tmp_path):
    out = tmp_path / "chat"
    script = f":image {image}\nwhere is the cup?\nand the one next to it?\n:reset\nwhat about the door?\n:quit\n"
    run = subprocess.run([LISA_ROS, "chat", "--model", str(checkpoint), "--out", str(out),
                          "--max-new-tokens", "8"], input=script, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "image 160x120 loaded" in run.stdout and "conversation reset" in run.stdout
    assert run.stdout.count("masks:") == 3
    for turn in range(3):
        result = json.loads((out / f"turn{turn}_result.json").read_text())
        assert len(result["objects"]) == result["answer"].count("[SEG]")


def test_chat_history_reaches_the_prompt(checkpoint, image):
    from lisa_ros.cli import read_rgb
    from lisa_ros.engine import GenerationOptions, LisaEngine
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions

    engine = LisaEngine(load_lisa(checkpoint, LoadOptions(precision="fp32")), GenerationOptions(max_new_tokens=4))
    frame = engine.encode_frame(read_rgb(image))
    first, conversation = engine.answer(frame, "where is the cup?")
    second, _ = engine.answer(frame, "and the plate?", history=conversation)
    assert f"ASSISTANT: {first.text}</s>USER: and the plate?" in second.prompt


def test_eval_modes_are_the_runners():
    from lisa_ros.cli import build_parser
    from lisa_ros.evaluate.runner import MODES

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["eval"]
    assert tuple(next(a for a in sub._actions if a.dest == "mode").choices) == MODES
