"""Writing scene splits in the ReasonSeg folder format (see :mod:`lisa_ros.data.scenes`)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2

from lisa_ros.data.scenes.generator import (
    Scene,
    camera_scene,
    make_scene,
    nothing_fits,
    paraphrase_rng,
    phrasing_split,
    scene_annotation,
    scene_rng,
)
from lisa_ros.data.scenes.vocabulary import CAMERA_SHARE, DEFAULT_SIZE, QUERY_TYPES

JPEG_QUALITY = 95
# JPEG without chroma subsampling (4:4:4): subsampled colour bleeds ~1 px over object edges.
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_444"):
    _JPEG_PARAMS += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
PARAPHRASES = 8  # extra phrasings per train/val sample (the trainer draws among them)
_SAMPLE_FILE = re.compile(r"^\d{5}\.(jpg|png|json)$")


def split_scene(seed: int, split: str, index: int, size: tuple[int, int] = DEFAULT_SIZE,
                camera_share: float = CAMERA_SHARE) -> Scene:
    """Sample ``index`` of a split exactly as :func:`write_split` writes it."""
    return make_scene(scene_rng(seed, split, index), QUERY_TYPES[index % len(QUERY_TYPES)], size, split,
                      nothing_fits=nothing_fits(seed, split, index), paraphrase_rng=paraphrase_rng(seed, split, index),
                      paraphrases=PARAPHRASES if split in ("train", "val") else 0,
                      camera=camera_scene(seed, split, index, camera_share))


def write_split(folder: str | Path, split: str, count: int, seed: int,
                size: tuple[int, int] = DEFAULT_SIZE, progress: bool = False,
                camera_share: float = CAMERA_SHARE) -> Path:
    """Write ``count`` samples of ``split`` into ``folder`` (created): ``00000.jpg`` + ``00000.json``, ...

    Sample ``i`` has query type ``QUERY_TYPES[i % len(QUERY_TYPES)]`` (balanced) and is generated from
    :func:`scene_rng` ``(seed, split, i)``, so the output is deterministic given (split, count,
    seed, size). About one sample in ten is a "nothing fits" scene (:func:`nothing_fits`). Train
    and val samples list :data:`PARAPHRASES` more phrasings of their query after the first; the
    test and camera splits keep one. ``camera_share`` of the train and val samples (about), and
    every sample of the camera split, are camera-like (:func:`~.generator.camera_scene`; their own
    image size, not ``size``). Numbered sample files (``NNNNN.jpg/png/json``) left from an earlier run
    are removed first. Returns the folder.
    """
    phrasing_split(split)
    if count < 0:
        raise ValueError("count must be >= 0")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file() and _SAMPLE_FILE.match(stale.name):
            stale.unlink()
    indices = range(count)
    if progress:
        try:
            from tqdm import tqdm
            indices = tqdm(indices, desc=f"{split}", unit="scene")
        except ImportError:  # tqdm comes with the ml extra; the generator works without it
            pass
    for index in indices:
        scene = split_scene(seed, split, index, size, camera_share)
        bgr = cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / f"{index:05d}.jpg"), bgr, _JPEG_PARAMS):
            raise OSError(f"cannot write {folder / f'{index:05d}.jpg'}")
        (folder / f"{index:05d}.json").write_text(json.dumps(scene_annotation(scene)) + "\n")
    return folder
