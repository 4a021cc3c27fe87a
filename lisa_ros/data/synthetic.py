"""Small synthetic datasets in both supported formats (tests, and checking a set-up end to end).

Each image shows a few coloured shapes on a plain background; the instruction names one of them
("the red square") and its mask is the target. With ``ignore`` the ReasonSeg JSON also holds an
"ignore" polygon overlapping the target, as real ReasonSeg files sometimes do.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}


def _scene(rng: np.random.Generator, size: tuple[int, int]):
    height, width = size
    rgb = np.full((height, width, 3), 235, np.uint8)
    names = rng.choice(list(COLOURS), size=2, replace=False)
    boxes = []
    for index, name in enumerate(names):
        w, h = int(rng.integers(width // 5, width // 3)), int(rng.integers(height // 5, height // 3))
        x = int(rng.integers(0, width // 2 - w)) + index * width // 2
        y = int(rng.integers(0, height - h))
        cv2.rectangle(rgb, (x, y), (x + w - 1, y + h - 1), COLOURS[name], -1)
        boxes.append((str(name), x, y, w, h))
    return rgb, boxes


def write_reasonseg(folder: str | Path, count: int = 6, size: tuple[int, int] = (96, 128), seed: int = 0,
                    ignore: bool = True) -> Path:
    """A ReasonSeg-format split folder: ``*.jpg`` + LabelMe-style ``*.json`` (text, is_sentence, shapes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        rgb, boxes = _scene(rng, size)
        name, x, y, w, h = boxes[0]
        shapes = [{"label": "target", "points": [[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]]}]
        if ignore:
            shapes.append({"label": "ignore", "points": [[x, y], [x + w // 3, y], [x + w // 3, y + h // 3], [x, y + h // 3]]})
        sentence = index % 2 == 0
        text = f"Which {name} object could hold something?" if sentence else f"the {name} box"
        cv2.imwrite(str(folder / f"{index:04d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
        (folder / f"{index:04d}.json").write_text(json.dumps({"text": [text], "is_sentence": sentence, "shapes": shapes}))
    return folder


def write_robot_jsonl(folder: str | Path, count: int = 8, size: tuple[int, int] = (96, 128), seed: int = 1) -> Path:
    """A robot-format folder: images/, masks/ and data.jsonl (instruction, mask, answer, explanation)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(count):
        rgb, boxes = _scene(rng, size)
        name, x, y, w, h = boxes[0]
        mask = np.zeros(size, np.uint8)
        mask[y:y + h, x:x + w] = 255
        cv2.imwrite(str(folder / "images" / f"{index:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / "masks" / f"{index:04d}.png"), mask)
        lines.append(json.dumps({"image": f"images/{index:04d}.png", "mask": f"masks/{index:04d}.png",
                                 "instruction": f"What should I pick up? It is the {name} one.",
                                 "answer": "Sure, it is [SEG].",
                                 "explanation": f"The {name} box is the one you asked for."}))
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder
