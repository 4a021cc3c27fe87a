"""Dataset readers: ReasonSeg folders and a robot's own JSON-lines data, as :class:`Sample` objects.

ReasonSeg (docs/MODEL.md §5.7): a folder of ``*.jpg`` images, each with a LabelMe-style ``*.json``:
``text`` (1-5 instructions), ``is_sentence`` (long sentence vs short phrase), ``shapes`` (polygons
with ``label`` and ``points``); optionally (ours, e.g. the generated reasoning scenes)
``explanation`` (a sentence for explanatory answers), ``answer`` (the reply to train on, instead of
a template), ``query_type`` (for per-type reports), ``objects`` (every object's polygon),
``nothing_fits`` (no object answers the query: no shapes, the answer has no ``[SEG]``),
``target_indices`` (the targets among ``objects``, several for "all the red objects") and
``history`` (earlier turns of a session, ``[[user text, answer], ...]``, for a follow-up) and
``slots`` (the words filled into the query's phrasing, ``{"colour": "red", ...}``). Masks are
rasterised with smaller shapes drawn over larger ones:
value 1 for targets, 255 for shapes whose label contains "ignore"; "flag" shapes are skipped.

Robot data (ours, what a user collects): a folder with ``data.jsonl``, one object per line::

    {"image": "frames/0001.png", "instruction": "what should I grab to open the door?",
     "mask": "masks/0001.png", "answer": "It is [SEG].", "explanation": "The handle opens it."}

``mask`` is a PNG, nonzero = target (255 or 1; 255 is *not* ignore here); ``answer`` and
``explanation`` are optional; ``is_sentence`` (default true) picks the long question template.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.errors import DataError

DATASET_TYPES = ("reasonseg", "robot")


@dataclass
class Sample:
    """One image with its instructions and ground truth (mask values 0/1, 255 = ignore)."""

    image_path: Path
    texts: list[str]
    is_sentence: bool
    mask: np.ndarray | None  # loaded lazily for ReasonSeg (shapes need the image size)
    shapes: list[dict] | None = None
    answer: str | None = None
    explanation: str | None = None
    query_type: str | None = None  # ours, optional: lets evaluation report per kind of query
    objects: list[dict] | None = None  # ours, optional: every object's polygon (decoder warm-up)
    nothing_fits: bool = False  # ours, optional: no object answers the query (no [SEG] expected)
    target_index: int | None = None  # ours, optional: which of ``objects`` is the target
    annotation_size: tuple[int, int] | None = None  # (height, width) the annotation gives, if any
    # ours, optional: every target of a several-target query (indices into ``objects``)
    target_indices: list[int] | None = None
    # ours, optional: earlier turns of the session, (user text as the engine sends it, answer)
    history: list[tuple[str, str]] | None = None
    # ours, optional: the words filled into the query's phrasing ({"colour": "red", ...})
    slots: dict | None = None

    @property
    def all_target_indices(self) -> list[int]:
        """Every target's index into ``objects``, in the answer's order: ``target_indices``, else
        ``[target_index]``, else [] (and [] when the annotation lists no objects)."""
        indices = self.target_indices or ([self.target_index] if self.target_index is not None else [])
        return [i for i in indices if self.objects is not None and 0 <= i < len(self.objects)]

    @property
    def several_targets(self) -> bool:
        """Whether the query names several objects (one [SEG] and one mask each)."""
        return len(self.all_target_indices) > 1

    @property
    def target_labels(self) -> list[str]:
        """Every target's label (one for most queries, several for "all the red objects")."""
        return [self.objects[i].get("label", "") for i in self.all_target_indices]

    def target_masks(self, height: int, width: int) -> list[np.ndarray]:
        """One bool mask per target object (several-target queries), from ``objects``; [] when
        the annotation does not list them."""
        return [rasterize_shapes([{"label": "target", "points": self.objects[i]["points"]}], height, width) == 1
                for i in self.all_target_indices]

    @property
    def target_label(self) -> str | None:
        """The target object's label ("red ball") when the annotation lists the objects and
        which one is the target (the generated scenes do), else None."""
        index = self.target_index
        if self.objects is None or index is None or not 0 <= index < len(self.objects):
            return None
        return self.objects[index].get("label")

    def rgb(self) -> np.ndarray:
        bgr = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"cannot read image {self.image_path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def target(self, height: int, width: int) -> np.ndarray:
        if self.mask is not None:
            return self.mask
        return rasterize_shapes(self.shapes or [], height, width)


def rasterize_shapes(shapes: list[dict], height: int, width: int) -> np.ndarray:
    """ReasonSeg polygons -> uint8 mask: 1 target, 255 ignore, 0 background (docs/MODEL.md §5.7)."""
    drawn = []
    for shape in shapes:
        label = str(shape.get("label", ""))
        if "flag" in label:
            continue
        points = np.asarray(shape.get("points", []), dtype=np.float64)
        if points.ndim != 2 or len(points) < 3:
            continue
        polygon = np.round(points).astype(np.int32).reshape(-1, 1, 2)
        canvas = np.zeros((height, width), np.uint8)
        cv2.polylines(canvas, [polygon], True, 1, 1)
        cv2.fillPoly(canvas, [polygon], 1)
        drawn.append((int(canvas.sum()), polygon, 255 if "ignore" in label else 1))
    mask = np.zeros((height, width), np.uint8)
    for _, polygon, value in sorted(drawn, key=lambda item: item[0], reverse=True):  # big first
        cv2.polylines(mask, [polygon], True, value, 1)
        cv2.fillPoly(mask, [polygon], value)
    return mask


def _read_json(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return json.loads(raw.decode("cp1252"))  # some ReasonSeg files are not UTF-8
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc


def read_reasonseg(folder: str | Path) -> list[Sample]:
    """Every image of a ReasonSeg split folder with its annotation."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"ReasonSeg folder {folder} does not exist")
    samples = []
    for image_path in sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png")):
        annotation = image_path.with_suffix(".json")
        if not annotation.is_file():
            continue
        data = _read_json(annotation)
        texts = [t for t in data.get("text", []) if str(t).strip()]
        if not texts:
            continue
        samples.append(Sample(image_path, texts, bool(data.get("is_sentence", False)), None,
                              shapes=data.get("shapes", []), explanation=data.get("explanation"),
                              query_type=data.get("query_type"), objects=data.get("objects"),
                              answer=data.get("answer"), nothing_fits=bool(data.get("nothing_fits", False)),
                              target_index=data.get("target_index"), target_indices=data.get("target_indices"),
                              history=[tuple(turn) for turn in data["history"]] if data.get("history") else None,
                              slots=data.get("slots") or None,
                              annotation_size=(int(data["imageHeight"]), int(data["imageWidth"]))
                              if "imageHeight" in data and "imageWidth" in data else None))
    if not samples:
        raise DataError(f"no annotated images (*.jpg + *.json) in {folder}")
    return samples


def read_robot_jsonl(folder: str | Path) -> list[Sample]:
    """A robot's own data: ``data.jsonl`` with image, instruction, mask (see the module doc)."""
    folder = Path(folder)
    index = folder / "data.jsonl"
    if not index.is_file():
        raise DataError(f"{folder} has no data.jsonl")
    samples = []
    for number, line in enumerate(index.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            image, mask_path, instruction = folder / item["image"], folder / item["mask"], item["instruction"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{index}:{number}: needs image, instruction and mask ({exc})") from exc
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise DataError(f"{index}:{number}: cannot read mask {mask_path}")
        samples.append(Sample(image, [instruction], bool(item.get("is_sentence", True)),
                              (mask > 0).astype(np.uint8), answer=item.get("answer"),
                              explanation=item.get("explanation")))
    if not samples:
        raise DataError(f"{index} holds no samples")
    return samples


def read_dataset(kind: str, path: str | Path) -> list[Sample]:
    if kind == "reasonseg":
        return read_reasonseg(path)
    if kind == "robot":
        return read_robot_jsonl(path)
    raise DataError(f"unknown dataset type {kind!r} ({' or '.join(DATASET_TYPES)})")
