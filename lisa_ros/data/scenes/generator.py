"""One reasoning scene: plan, place, render, phrase the query and the explanation."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from lisa_ros.data.scenes.layout import PLANS, Builder, PlanRetry, place, polygon_mask
from lisa_ros.data.scenes.rendering import background, render
from lisa_ros.data.scenes.vocabulary import DEFAULT_SIZE, EXPLANATIONS, PHRASINGS, QUERY_TYPES, SPLITS, pick


@dataclass
class SceneObject:
    """One drawn object.

    ``polygon``: int32 array (N, 2) of (x, y) pixel coordinates; ``mask``: bool (H, W), exactly
    what the polygon rasterises to (outline + fill) and exactly the pixels painted with the
    object's colour/texture. ``label`` is ``"<colour> <shape>"``.
    """

    label: str
    colour: str
    shape: str
    polygon: np.ndarray
    mask: np.ndarray
    texture: str = "solid"

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass
class Scene:
    """A generated image with its query.

    ``rgb``: uint8 (H, W, 3); ``background``: uint8 (H, W, 3), the same image without the objects
    (outside every object mask ``rgb == background``); ``objects[target_index]`` is the answer.
    """

    rgb: np.ndarray
    query: str
    query_type: str
    explanation: str
    target_index: int
    objects: list[SceneObject]
    background: np.ndarray | None = None

    @property
    def target(self) -> SceneObject:
        return self.objects[self.target_index]


def phrasing_split(split: str) -> str:
    """The phrasing set of ``split`` ("test" for the test split, "train" otherwise); ValueError
    for an unknown split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    return "test" if split == "test" else "train"


def make_scene(rng: np.random.Generator, query_type: str, size: tuple[int, int] = DEFAULT_SIZE,
               split: str = "train") -> Scene:
    """One scene of ``query_type`` at ``size`` = (width, height), with the phrasings of ``split``.

    Deterministic given the generator's state. The returned :class:`Scene` has exactly one
    valid target, ``scene.objects[scene.target_index]``.
    """
    if query_type not in PLANS:
        raise ValueError(f"unknown query type {query_type!r} (one of {', '.join(QUERY_TYPES)})")
    phrasing = phrasing_split(split)
    width, height = int(size[0]), int(size[1])
    if min(width, height) < 48:
        raise ValueError(f"image size {width}x{height} is too small (short side >= 48)")
    builder = Builder(rng, width, height)
    for _ in range(500):
        try:
            target, others, slots = PLANS[query_type](builder)
            pieces = [target] + others
            order = rng.permutation(len(pieces))  # the target's position is random
            pieces = [pieces[i] for i in order]
            target_index = int(np.flatnonzero(order == 0)[0])
            offsets = place(pieces, width, height, rng)
        except PlanRetry:
            continue
        break
    else:  # pragma: no cover - only for absurd sizes
        raise RuntimeError(f"could not lay out a {query_type} scene at {width}x{height}")

    plain_background = background(rng, width, height)
    image = render(pieces, offsets, plain_background, rng)
    gain = np.float32(rng.uniform(0.92, 1.08))  # per-image brightness jitter
    rgb = np.clip(np.rint(image * gain), 0, 255).astype(np.uint8)
    plain = np.clip(np.rint(plain_background * gain), 0, 255).astype(np.uint8)

    objects = []
    for piece, (x, y) in zip(pieces, offsets):
        polygon = piece.polygon + np.array([x, y], np.int32)
        objects.append(SceneObject(f"{piece.colour} {piece.shape}", piece.colour, piece.shape,
                                   polygon, polygon_mask(polygon, height, width), piece.texture))

    chosen = objects[target_index]
    cue = slots.get("cue", "")
    fields = {"colour": chosen.colour, "shape": chosen.shape, "cue": cue,
              "Cue": cue[:1].upper() + cue[1:], **{k: v for k, v in slots.items() if k != "cue"}}
    query = pick(rng, PHRASINGS[query_type][phrasing]).format(**fields)
    explanation_key = f"odd_one_out_{slots['kind']}" if query_type == "odd_one_out" else query_type
    explanation = pick(rng, EXPLANATIONS[explanation_key]).format(**fields)
    return Scene(rgb, query, query_type, explanation, target_index, objects, plain)


def scene_annotation(scene: Scene) -> dict:
    """The ReasonSeg JSON of a scene (see the module doc for the keys)."""
    height, width = scene.rgb.shape[:2]
    return {
        "text": [scene.query],
        "is_sentence": True,
        "shapes": [{"label": "target", "points": scene.target.polygon.tolist()}],
        "explanation": scene.explanation,
        "query_type": scene.query_type,
        "target_index": scene.target_index,
        "objects": [{"label": obj.label, "points": obj.polygon.tolist()} for obj in scene.objects],
        "imageWidth": width,
        "imageHeight": height,
    }


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator :func:`write_split` uses for sample ``index``: depends on the seed, the
    split's name and the index, so splits never share scenes and samples can be regenerated."""
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be >= 0")
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))
