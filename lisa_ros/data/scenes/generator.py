"""One reasoning scene: plan, place, render, phrase the query and the explanation."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

import cv2

from lisa_ros.data.scenes.layout import NOTHING_FITS_PLANS, PLANS, Builder, PlanRetry, place, polygon_mask
from lisa_ros.data.scenes.rendering import background, render
from lisa_ros.data.scenes.vocabulary import (
    DEFAULT_SIZE,
    EXPLANATIONS,
    LOOK_FOR,
    NOTHING_FITS_SHARE,
    ODD_ONE_OUT_ANSWER,
    PHRASINGS,
    PLURALS,
    QUERY_TYPES,
    REFUSALS,
    SPLITS,
    TARGET_ANSWER,
    COLOUR_CUES,
    TRAINING_CUES,
    cue_slots,
    pick,
    region,
)


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

    @property
    def point(self) -> tuple[int, int]:
        """(x, y): the pixel deepest inside the object (the distance transform's maximum; a cup's
        or a star's centroid can lie outside it)."""
        depth = cv2.distanceTransform(np.pad(self.mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(depth.argmax()), depth.shape)
        return int(x), int(y)


@dataclass
class Scene:
    """A generated image with its query.

    ``rgb``: uint8 (H, W, 3); ``background``: uint8 (H, W, 3), the same image without the objects
    (outside every object mask ``rgb == background``); ``objects[target_index]`` is the answer,
    or ``target_index`` is None when nothing in the scene answers the query ("nothing fits").
    ``answer``: what the model should say: what it looks for
    (:data:`~lisa_ros.data.scenes.vocabulary.LOOK_FOR`), then the target named before ``[SEG]``
    (:data:`~lisa_ros.data.scenes.vocabulary.TARGET_ANSWER`) or that nothing fits, without ``[SEG]``
    (:data:`~lisa_ros.data.scenes.vocabulary.REFUSALS`).
    ``paraphrases``: more phrasings of the same query (training splits only).
    """

    rgb: np.ndarray
    query: str
    query_type: str
    explanation: str
    target_index: int | None
    objects: list[SceneObject]
    background: np.ndarray | None = None
    answer: str = ""
    paraphrases: tuple[str, ...] = ()

    @property
    def target(self) -> SceneObject | None:
        return None if self.target_index is None else self.objects[self.target_index]


def phrasing_split(split: str) -> str:
    """The phrasing set of ``split`` ("test" for the test split, "train" otherwise); ValueError
    for an unknown split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    return "test" if split == "test" else "train"


def make_scene(rng: np.random.Generator, query_type: str, size: tuple[int, int] = DEFAULT_SIZE,
               split: str = "train", nothing_fits: bool = False, paraphrase_rng: np.random.Generator | None = None,
               paraphrases: int = 0) -> Scene:
    """One scene of ``query_type`` at ``size`` = (width, height), with the phrasings of ``split``.

    Deterministic given the generators' states. The returned :class:`Scene` has exactly one valid
    target, ``scene.objects[scene.target_index]``, or with ``nothing_fits`` none (the same kind
    of query about a scene where no object answers it). ``paraphrases``: that many more
    phrasings of the query, drawn with ``paraphrase_rng`` (so they change nothing else).
    """
    if query_type not in PLANS:
        raise ValueError(f"unknown query type {query_type!r} (one of {', '.join(QUERY_TYPES)})")
    phrasing = phrasing_split(split)
    width, height = int(size[0]), int(size[1])
    if min(width, height) < 48:
        raise ValueError(f"image size {width}x{height} is too small (short side >= 48)")
    builder = Builder(rng, width, height)
    plan = (NOTHING_FITS_PLANS if nothing_fits else PLANS)[query_type]
    for _ in range(500):
        try:
            target, others, slots = plan(builder)
            pieces = ([target] if target is not None else []) + others
            order = rng.permutation(len(pieces))  # the target's position is random
            pieces = [pieces[i] for i in order]
            target_index = None if target is None else int(np.flatnonzero(order == 0)[0])
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

    chosen = objects[target_index] if target_index is not None else None
    cue = slots.get("cue", "")
    fields = {"colour": chosen.colour if chosen else slots.get("colour", ""),
              "shape": chosen.shape if chosen else slots.get("shape", ""), **cue_slots(cue),
              **{k: v for k, v in slots.items() if k not in ("cue", "colour", "shape")}}
    templates = PHRASINGS[query_type][phrasing]
    query = pick(rng, templates).format(**fields)
    look = LOOK_FOR[query_type].format(**fields)
    if chosen is None:
        explanation = ""
        answer = pick(rng, REFUSALS[query_type]).format(look=look, shapes=PLURALS.get(fields["shape"], ""), **fields)
    else:
        explanation_key = f"odd_one_out_{slots['kind']}" if query_type == "odd_one_out" else query_type
        explanation = pick(rng, EXPLANATIONS[explanation_key]).format(**fields)
        template = ODD_ONE_OUT_ANSWER if query_type == "odd_one_out" else TARGET_ANSWER
        answer = template.format(look=look, colour=chosen.colour, shape=chosen.shape, others=slots.get("others", ""),
                                 where=region(*chosen.point, width, height))
    more: list[str] = []
    if paraphrases and paraphrase_rng is not None:
        for _ in range(paraphrases):
            more_fields = dict(fields)
            if query_type == "colour_knowledge":  # other world knowledge for the same colour, too
                cues = COLOUR_CUES[fields["colour"]] + TRAINING_CUES[fields["colour"]]
                cue = cues[int(paraphrase_rng.integers(len(cues)))]
                more_fields.update(cue_slots(cue))
            text = templates[int(paraphrase_rng.integers(len(templates)))].format(**more_fields)
            if text != query and text not in more:
                more.append(text)
    return Scene(rgb, query, query_type, explanation, target_index, objects, plain, answer, tuple(more))


def scene_annotation(scene: Scene) -> dict:
    """The ReasonSeg JSON of a scene (see the package doc for the keys)."""
    height, width = scene.rgb.shape[:2]
    target = scene.target
    return {
        "text": [scene.query, *scene.paraphrases],
        "is_sentence": True,
        "shapes": [] if target is None else [{"label": "target", "points": target.polygon.tolist()}],
        "answer": scene.answer,
        "explanation": scene.explanation,
        "query_type": scene.query_type,
        "target_index": scene.target_index,
        "nothing_fits": target is None,
        "objects": [{"label": obj.label, "points": obj.polygon.tolist(), "point": list(obj.point), "area": obj.area}
                    for obj in scene.objects],
        "imageWidth": width,
        "imageHeight": height,
    }


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator :func:`write_split` uses for sample ``index``: depends on the seed, the
    split's name and the index, so splits never share scenes and samples can be regenerated."""
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be >= 0")
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def nothing_fits(seed: int, split: str, index: int) -> bool:
    """Whether sample ``index`` of a split is a "nothing fits" scene (about
    :data:`~lisa_ros.data.scenes.vocabulary.NOTHING_FITS_SHARE` of each split), from its own
    generator: the other samples' images stay what they were before such scenes existed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index, 1]))
    return bool(rng.random() < NOTHING_FITS_SHARE)


def paraphrase_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s extra phrasings (independent of its image)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index, 2]))
