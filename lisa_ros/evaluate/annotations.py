"""Ground-truth masks of recorded camera frames, keyed by the frame's header stamp: what
``lisa-ros replay --annotations`` scores the answers against. ROS-free.

Two formats, the ones segmentation tools export:

* **A folder of PNG masks**, one per annotated frame, named by the frame's header stamp:
  ``<sec>.<fraction>.png`` (seconds, e.g. ``1700000000.250000000.png`` or ``5.3.png``),
  ``<sec>_<nanosec>.png`` (the header's two fields) or ``<nanoseconds>.png``. Single channel
  (mono8, or 16-bit); 0 is background, any other value is the target, so 0/255 and 0/1 masks read
  alike. An all-zero mask says the command's target is not in that frame (an empty answer scores
  1, a mask 0).
* **A COCO JSON file** (``*.json``): ``images`` entries with ``id``, ``width``, ``height`` and the
  frame's stamp, either as ``stamp`` (seconds, or ``{"sec": .., "nanosec": ..}``) or as a
  ``file_name`` named as above; ``annotations`` with ``image_id`` and ``segmentation`` as RLE
  (``{"size": [h, w], "counts": ...}``, compressed string or uncompressed list) or polygons. The
  annotations of one image are its targets; an image without any says the target is not there.
  Decoded with ``pycocotools`` (COCO's own RLE code).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lisa_ros.errors import DataError

NS_PER_S = 1_000_000_000
_DECIMAL = re.compile(r"^(\d+)\.(\d{1,9})$")
_FIELDS = re.compile(r"^(\d+)_(\d{1,9})$")
_INTEGER = re.compile(r"^(\d+)$")


@dataclass
class FrameAnnotation:
    """The targets of one frame: ``targets``, one ``(H, W)`` bool mask per object (empty: the
    target is not in this frame); ``stamp_ns``: the frame's header stamp, nanoseconds;
    ``source``: where it was read (file name or image id), for messages."""

    stamp_ns: int
    targets: list[np.ndarray]
    size: tuple[int, int]  # (height, width)
    source: str

    @property
    def union(self) -> np.ndarray:
        """``(H, W)`` bool: every target's pixels."""
        union = np.zeros(self.size, bool)
        for target in self.targets:
            union |= target
        return union


def stamp_from_name(name: str) -> int | None:
    """The stamp (ns) a file name's stem spells (formats in the module docstring), or None."""
    stem = Path(name).stem if Path(name).suffix.lower() in (".png", ".jpg", ".jpeg") else name
    if match := _DECIMAL.match(stem):
        return int(match[1]) * NS_PER_S + int(match[2].ljust(9, "0"))
    if match := _FIELDS.match(stem):
        return int(match[1]) * NS_PER_S + int(match[2])
    if match := _INTEGER.match(stem):
        return int(match[1])
    return None


def read_annotations(path: str | Path) -> dict[int, FrameAnnotation]:
    """The annotations at ``path`` (a folder of PNG masks or a COCO JSON file), by stamp (ns).

    Raises DataError: the path does not exist, holds no annotation, a file name spells no stamp,
    two annotations have one stamp, a PNG cannot be read or has colour channels, the JSON is not
    COCO-shaped, a segmentation does not fit its image."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"annotations {path} do not exist")
    found = _read_coco(path) if path.is_file() else _read_png_folder(path)
    if not found:
        raise DataError(f"annotations {path} hold no annotated frame")
    return found


def _add(found: dict[int, FrameAnnotation], annotation: FrameAnnotation) -> None:
    if annotation.stamp_ns in found:
        raise DataError(f"annotations {found[annotation.stamp_ns].source} and {annotation.source} are for the "
                        f"same stamp {annotation.stamp_ns} ns")
    found[annotation.stamp_ns] = annotation


def _read_png_folder(folder: Path) -> dict[int, FrameAnnotation]:
    import cv2

    found: dict[int, FrameAnnotation] = {}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise DataError(f"annotations folder {folder} holds no .png mask (named by stamp, e.g. 5.300000000.png)")
    for file in files:
        stamp = stamp_from_name(file.name)
        if stamp is None:
            raise DataError(f"annotation {file.name}: the name is not a stamp (<sec>.<fraction>.png, "
                            "<sec>_<nanosec>.png or <nanoseconds>.png)")
        mask = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise DataError(f"annotation {file} cannot be read as a PNG image")
        if mask.ndim != 2:
            raise DataError(f"annotation {file.name} has {mask.shape[2]} channels: a mask is one channel (mono8)")
        target = mask > 0
        _add(found, FrameAnnotation(stamp, [target] if target.any() else [], target.shape, file.name))
    return found


def _coco_stamp(image: dict) -> int | None:
    stamp = image.get("stamp")
    if isinstance(stamp, dict) and {"sec", "nanosec"} <= set(stamp):
        return int(stamp["sec"]) * NS_PER_S + int(stamp["nanosec"])
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        return stamp_from_name(f"{float(stamp):.9f}")
    if isinstance(image.get("file_name"), str):
        return stamp_from_name(Path(image["file_name"]).name)
    return None


def rle_string_counts(text: str, where: str = "RLE") -> list[int]:
    """The run lengths a COCO compressed RLE string spells (the format of pycocotools'
    ``encode``): each count in 5-bit groups, least significant first, as characters from "0"
    (48); bit 5 of a group says another follows, bit 4 of the last one is the sign; from the
    third count on, the value is added to the count two before. DataError when it ends mid-count
    or a count is negative."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise DataError(f"{where}: the RLE string ends in the middle of a count")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise DataError(f"{where}: {text[position]!r} is not an RLE character")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise DataError(f"{where}: the RLE string spells a negative run")
        counts.append(value)
    return counts


def _decode_segmentation(segmentation, height: int, width: int, where: str) -> np.ndarray:
    from pycocotools import mask as coco_mask

    try:
        if isinstance(segmentation, dict):
            if list(segmentation.get("size", [])) != [height, width]:
                raise DataError(f"{where}: RLE size {segmentation.get('size')} is not the image's "
                                f"[{height}, {width}]")
            counts = segmentation.get("counts")
            if isinstance(counts, str):
                counts = rle_string_counts(counts, where)
            if not isinstance(counts, list) or not all(isinstance(c, int) and c >= 0 for c in counts):
                raise DataError(f"{where}: RLE counts are neither a COCO string nor a list of run lengths")
            if sum(counts) != height * width:  # pycocotools would leave the rest of the mask undefined
                raise DataError(f"{where}: RLE counts cover {sum(counts)} pixels, the image {height * width}")
            decoded = coco_mask.decode(coco_mask.frPyObjects({"size": [height, width], "counts": counts},
                                                             height, width))
        elif isinstance(segmentation, list) and segmentation:
            decoded = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width)))
        else:
            raise DataError(f"{where}: segmentation is neither RLE nor polygons")
    except DataError:
        raise
    except Exception as exc:  # pycocotools raises TypeError/ValueError on malformed counts
        raise DataError(f"{where}: segmentation cannot be decoded ({type(exc).__name__}: {exc})") from exc
    return decoded.astype(bool).reshape(height, width)


def _read_coco(file: Path) -> dict[int, FrameAnnotation]:
    try:
        coco = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"annotations {file} are not JSON: {exc}") from exc
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) \
            or not isinstance(coco.get("annotations", []), list):
        raise DataError(f"annotations {file}: not COCO-shaped (an object with `images` and `annotations` lists)")
    images: dict = {}
    for image in coco["images"]:
        if not isinstance(image, dict) or "id" not in image or "width" not in image or "height" not in image:
            raise DataError(f"annotations {file}: every image needs id, width and height ({image!r:.80})")
        stamp = _coco_stamp(image)
        if stamp is None:
            raise DataError(f"annotations {file}: image {image['id']} gives no stamp (`stamp`, or a `file_name` "
                            "named by stamp)")
        images[image["id"]] = (stamp, int(image["height"]), int(image["width"]), [])
    for annotation in coco.get("annotations", []):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if image_id not in images:
            raise DataError(f"annotations {file}: an annotation's image_id {image_id!r} is not an image")
        _, height, width, targets = images[image_id]
        targets.append(_decode_segmentation(annotation.get("segmentation"), height, width,
                                            f"annotations {file}, image {image_id}"))
    found: dict[int, FrameAnnotation] = {}
    for image_id, (stamp, height, width, targets) in images.items():
        _add(found, FrameAnnotation(stamp, targets, (height, width), f"image {image_id}"))
    return found
