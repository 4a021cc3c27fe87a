"""Procedural reasoning-segmentation scenes in the ReasonSeg folder format.

Each scene shows 3-5 flat coloured objects (ball, square, triangle, star, cup, bar, cross) on a
low-saturation grey/beige background, with exactly one query whose single valid answer needs a
small step of reasoning rather than the object's name:

=====================  =====================================================================
``roll``               the only round object (a ball) — "which object could roll down a slope?"
``colour_knowledge``   the only object of colour C, named through world knowledge only
                       ("the same colour as a ripe banana" -> yellow)
``largest_of_colour``  the largest of 2-3 objects of colour C (area >= 1.8x the next one; an
                       object of another colour is bigger than the target)
``smallest_of_colour`` the smallest of 2-3 objects of colour C (the next one >= 1.8x its area;
                       an object of another colour is smaller than the target)
``odd_one_out``        all objects share one shape and one colour except the target, which
                       differs in exactly one of them; the query does not say which
``hold_water``         the only open container (a cup) among solid objects
=====================  =====================================================================

The ``train`` and ``val`` splits use one set of query phrasings, ``test`` a different one
(:data:`PHRASINGS`), so the test split checks that a model generalises to new wordings.

Files written by :func:`write_split` (one pair per sample, read by
``lisa_ros.train.data.read_reasonseg``): ``NNNNN.jpg`` (JPEG quality 95, no chroma subsampling) and ``NNNNN.json``::

    {"text": [query], "is_sentence": true,
     "shapes": [{"label": "target", "points": [[x, y], ...]}],
     "explanation": "It is round, so it would roll down a slope.",
     "query_type": "roll", "target_index": 2,
     "objects": [{"label": "red ball", "points": [[x, y], ...]}, ...],
     "imageWidth": 320, "imageHeight": 240}

``explanation``, ``query_type``, ``target_index``, ``objects`` (every object, target included,
in drawing order) and the LabelMe ``imageWidth``/``imageHeight`` are our extension; the reader
ignores them. Points are integer pixel coordinates (x right, y down). Every object is drawn by
filling exactly the mask its polygon rasterises to (``cv2.polylines`` + ``cv2.fillPoly``, as
``rasterize_shapes`` does), so the annotation and the pixels agree exactly; objects never touch
(a gap of a few pixels) and the shortest side of every object's bounding box is at least 12% of
the image's short side.

Command line::

    python -m lisa_ros.train.reasoning_scenes OUT_DIR [--splits train,val,test]
        [--count-train N --count-val N --count-test N] [--seed-offset K] [--size 320x240]

writes ``OUT_DIR/<split>/`` with seed ``SPLIT_SEEDS[split] + K`` and prints the count per type.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

QUERY_TYPES: tuple[str, ...] = (
    "roll",
    "colour_knowledge",
    "largest_of_colour",
    "smallest_of_colour",
    "odd_one_out",
    "hold_water",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZE: tuple[int, int] = (320, 240)  # (width, height)
JPEG_QUALITY = 95
# JPEG without chroma subsampling (4:4:4): subsampled colour bleeds ~1 px over object edges.
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_444"):
    _JPEG_PARAMS += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]

# Named object colours (RGB), far apart from each other (>= 80 in RGB distance) and from the
# low-saturation backgrounds. Tests check that an object's mean colour is nearest its name.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (245, 125, 25),
    "yellow": (240, 220, 50),
    "green": (50, 160, 60),
    "blue": (40, 80, 210),
    "purple": (130, 60, 170),
    "pink": (240, 130, 190),
    "brown": (120, 75, 35),
    "white": (250, 250, 250),
    "black": (25, 25, 25),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

SHAPES: tuple[str, ...] = ("ball", "square", "triangle", "star", "cup", "bar", "cross")
ROUND_SHAPES = frozenset({"ball"})
CONTAINER_SHAPES = frozenset({"cup"})
_PLURALS = {"ball": "balls", "square": "squares", "triangle": "triangles", "star": "stars",
            "cup": "cups", "bar": "bars", "cross": "crosses"}
# The smallest characteristic size of each shape, as a fraction of the image's short side (thin
# parts such as a star's arms need a bigger object to stay visible at 256 px).
_SHAPE_MIN = {"ball": 0.13, "square": 0.13, "triangle": 0.14, "star": 0.2, "cup": 0.17,
              "bar": 0.13, "cross": 0.2}
MIN_SIDE_FRACTION = 0.12  # every object's bounding box is at least this x the short side
TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots")

# World knowledge that names a colour without saying it (noun phrases that fit the templates).
COLOUR_CUES: dict[str, tuple[str, ...]] = {
    "yellow": ("a ripe banana", "a lemon"),
    "green": ("fresh grass", "a leaf", "a frog"),
    "blue": ("a clear sky", "the ocean"),
    "red": ("a fire truck", "a ripe tomato", "a strawberry"),
    "orange": ("a carrot", "a pumpkin"),
    "brown": ("chocolate", "tree bark"),
    "white": ("fresh snow", "milk"),
    "black": ("coal", "the night sky"),
    "purple": ("lavender", "an eggplant"),
    "pink": ("a flamingo", "bubblegum"),
}

# Query phrasings: train/val use "train", the held-out test split uses "test" only. Slots:
# {cue} (colour_knowledge), {colour} (largest/smallest_of_colour).
PHRASINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "roll": {
        "train": (
            "Which object could roll down a slope?",
            "What would roll down a slope if I let go of it?",
            "Which thing here could roll down a hill?",
            "Show me the object that could roll down a slope.",
            "Which of these objects is able to roll?",
            "What here could roll across the floor if I pushed it?",
        ),
        "test": (
            "If I put everything on a ramp, which thing would roll away?",
            "Something here would not stay still on an incline. Which one is it?",
            "I tilt the table a little. What ends up tumbling off the edge first?",
        ),
    },
    "colour_knowledge": {
        "train": (
            "Which object has the same colour as {cue}?",
            "Find the object that is the colour of {cue}.",
            "What is coloured like {cue}?",
            "Show me the thing whose colour matches {cue}.",
            "Which thing has the colour of {cue}?",
            "Point out the object coloured like {cue}.",
        ),
        "test": (
            "If I wanted something that looks like {cue} in colour, which one would I take?",
            "Imagine painting {cue}. Which item here already wears that paint?",
            "I need an item matching the usual shade of {cue}; which is it?",
        ),
    },
    "largest_of_colour": {
        "train": (
            "Which is the largest of the {colour} things?",
            "Find the biggest {colour} object.",
            "What is the largest {colour} object here?",
            "Show me the biggest of the {colour} objects.",
            "Among the {colour} objects, which one is the largest?",
            "Point to the largest {colour} thing in the picture.",
        ),
        "test": (
            "Out of everything that is {colour}, I want the one taking up the most space.",
            "Several {colour} items are here; grab whichever of them covers the most area.",
            "If I only look at {colour} items, which one has the greatest size?",
        ),
    },
    "smallest_of_colour": {
        "train": (
            "Which is the smallest of the {colour} things?",
            "Find the tiniest {colour} object.",
            "What is the smallest {colour} object here?",
            "Show me the littlest of the {colour} objects.",
            "Among the {colour} objects, which one is the smallest?",
            "Point to the smallest {colour} thing in the picture.",
        ),
        "test": (
            "Out of everything that is {colour}, I want the one taking up the least space.",
            "Several {colour} items are here; grab whichever of them covers the least area.",
            "If I only look at {colour} items, which one has the most modest size?",
        ),
    },
    "odd_one_out": {
        "train": (
            "Which object is different from the others?",
            "Find the odd one out in this picture.",
            "Which one does not belong with the rest?",
            "Show me the object that does not match the others.",
            "What is the odd one out here?",
            "Which thing is unlike all the other things?",
        ),
        "test": (
            "All but one of these items have something in common. Point out the exception.",
            "One item breaks the pattern the others follow; which is it?",
            "If you grouped these by similarity, which would be left alone?",
        ),
    },
    "hold_water": {
        "train": (
            "What should I pick up to hold water?",
            "Which object could hold water?",
            "Find something I could pour water into.",
            "Which of these things can carry water?",
            "What here could I use to hold some water?",
            "Show me the object that can contain water.",
        ),
        "test": (
            "I am thirsty and need something to drink from. Which item works?",
            "Where could I keep a bit of liquid without it spilling out?",
            "To bring juice to the table, which one of these should I use?",
        ),
    },
}

# Explanations (one sentence each). Slots: {colour} {shape} of the target, {cue}, {Cue}
# (capitalised), {others} (the colour or plural shape the other objects share).
EXPLANATIONS: dict[str, tuple[str, ...]] = {
    "roll": (
        "It is round, so it would roll down a slope.",
        "The {colour} {shape} is the only round object, so it is the one that would roll.",
    ),
    "colour_knowledge": (
        "{Cue} is {colour}, and the {colour} {shape} is the only {colour} object here.",
        "It is {colour} like {cue}, and nothing else here is {colour}.",
    ),
    "largest_of_colour": (
        "It is the biggest of the {colour} objects.",
        "The {colour} {shape} is larger than every other {colour} object.",
    ),
    "smallest_of_colour": (
        "It is the smallest of the {colour} objects.",
        "The {colour} {shape} is smaller than every other {colour} object.",
    ),
    "odd_one_out_shape": (
        "It is {a_shape} while all the others are {others}.",
        "Every other object is one of the {others}; only this one is {a_shape}.",
    ),
    "odd_one_out_colour": (
        "It is {colour} while all the others are {others}.",
        "Every other object is {others}; only this one is {colour}.",
    ),
    "hold_water": (
        "It is an open container, so it can hold water.",
        "The {colour} cup is open at the top, so water can stay inside it.",
    ),
}

_SAMPLE_FILE = re.compile(r"^\d{5}\.(jpg|png|json)$")


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


@dataclass
class _Piece:
    """An object before placement: polygon and mask in its own bounding box."""

    colour: str
    shape: str
    polygon: np.ndarray  # int32 (N, 2), bounding box starts at (0, 0)
    mask: np.ndarray  # bool (h, w)
    texture: str
    style: dict | None = None  # texture look shared by several pieces; None = random per piece

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def bbox_area(self) -> int:
        return int(self.mask.shape[0] * self.mask.shape[1])


class _Retry(Exception):
    """The sampled plan did not fit; try again with new random choices."""


# ------------------------------------------------------------------------------------ geometry


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (height, width) mask of one polygon, rasterised like ``data.rasterize_shapes``."""
    canvas = np.zeros((height, width), np.uint8)
    points = np.asarray(polygon, np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [points], True, 1, 1)
    cv2.fillPoly(canvas, [points], 1)
    return canvas.astype(bool)


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _outline(shape: str, size: float, min_side: float, rng: np.random.Generator) -> np.ndarray:
    """Float (N, 2) outline of ``shape`` centred on (0, 0) with characteristic extent ``size``."""
    half = size / 2
    if shape == "ball":
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], 1) * half
    if shape == "square":
        points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * half
        return _rotate(points, rng.uniform(-20, 20))
    if shape == "triangle":  # equilateral, height = size
        angles = np.deg2rad([-90, 30, 150])
        points = np.stack([np.cos(angles), np.sin(angles)], 1) * (2 * size / 3)
        return _rotate(points, rng.uniform(0, 360))
    if shape == "star":  # five points; the bounding box is about size x size
        outer = size / 1.85
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, outer, outer * 0.45)
        points = np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
        return _rotate(points, rng.uniform(-36, 36))
    if shape == "cup":  # an upright U, slightly wider at the top; open at the top
        top, bottom, height = 0.9 * size, 0.7 * size, 1.05 * size
        wall, base = max(3.0, 0.24 * top), 0.24 * height
        y0, y1, yin = -height / 2, height / 2, height / 2 - base

        def outer_x(y: float) -> float:
            return bottom / 2 + (top - bottom) / 2 * (y1 - y) / height

        points = np.array([
            [-top / 2, y0], [-bottom / 2, y1], [bottom / 2, y1], [top / 2, y0],
            [top / 2 - wall, y0], [outer_x(yin) - wall, yin],
            [-(outer_x(yin) - wall), yin], [-(top / 2 - wall), y0],
        ])
        return _rotate(points, rng.uniform(-8, 8))
    if shape == "bar":  # a long thin rectangle
        thickness = max(min_side, 0.3 * size) * rng.uniform(1.0, 1.15)
        length = thickness * rng.uniform(3.0, 3.8)
        points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * [length / 2, thickness / 2]
        angle = [0.0, 90.0, rng.uniform(0, 180)][int(rng.integers(3))]
        return _rotate(points, angle)
    if shape == "cross":  # a plus sign with arms one third of its extent wide
        a, b = 0.18 * size, half
        points = np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b],
                           [-a, a], [-b, a], [-b, -a], [-a, -a]])
        return _rotate(points, rng.uniform(-20, 20))
    raise ValueError(f"unknown shape {shape!r}")


class _Builder:
    """Turns (colour, shape, size fraction) into a local polygon + mask for one image size."""

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.rng = rng
        self.width, self.height = width, height
        self.short = min(width, height)
        self.min_side = MIN_SIDE_FRACTION * self.short

    def piece(self, colour: str, shape: str, size: float, texture: str | None = None,
              style: dict | None = None) -> _Piece:
        """``size`` is a fraction of the short side (raised to the shape's minimum)."""
        extent = max(size, _SHAPE_MIN[shape]) * self.short
        outline = _outline(shape, extent, self.min_side, self.rng)
        polygon = np.round(outline - outline.min(axis=0)).astype(np.int32)
        w, h = (polygon.max(axis=0) + 1).tolist()
        if min(w, h) < self.min_side or w > self.width - 8 or h > self.height - 8:
            raise _Retry
        mask = polygon_mask(polygon, h, w)
        if texture is None:
            texture = TEXTURES[int(self.rng.integers(len(TEXTURES)))]
        return _Piece(colour, shape, polygon, mask, texture, style)


# --------------------------------------------------------------------------------- scene plans


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _others(options, *excluded) -> list[str]:
    return [option for option in options if option not in excluded]


def _count(rng: np.random.Generator, low: int = 3, high: int = 5) -> int:
    return int(rng.integers(low, high + 1))


def _default_size(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.14, 0.36))


def _plan_only_one_of_a_kind(b: _Builder, shape: str, kind: tuple[str, ...], target_size):
    """The target is the scene's only object of shape ``kind`` (drawn as ``shape``); the others
    take any other shape. ``target_size(rng)`` draws the target's size (after its colour)."""
    rng = b.rng
    n = _count(rng)
    target = b.piece(_pick(rng, COLOURS), shape, target_size(rng))
    others = [b.piece(_pick(rng, COLOURS), _pick(rng, _others(SHAPES, *kind)), _default_size(rng))
              for _ in range(n - 1)]
    return target, others, {}


def _plan_roll(b: _Builder):
    return _plan_only_one_of_a_kind(b, "ball", ROUND_SHAPES, _default_size)


def _plan_hold_water(b: _Builder):
    return _plan_only_one_of_a_kind(b, "cup", CONTAINER_SHAPES, lambda rng: float(rng.uniform(0.18, 0.36)))


def _plan_colour_knowledge(b: _Builder):
    rng = b.rng
    n = _count(rng)
    colour = _pick(rng, COLOURS)
    target = b.piece(colour, _pick(rng, SHAPES), _default_size(rng))
    others = [b.piece(_pick(rng, _others(COLOURS, colour)), _pick(rng, SHAPES), _default_size(rng))
              for _ in range(n - 1)]
    return target, others, {"cue": _pick(rng, COLOUR_CUES[colour])}


_COMPACT = _others(SHAPES, "bar")  # shapes whose area follows their extent


def _plan_extreme_of_colour(b: _Builder, largest: bool):
    """2-3 objects of one colour, the target clearly the largest (smallest) of them, and at least
    one object of another colour clearly bigger (smaller) than the target."""
    rng = b.rng
    group = int(rng.integers(2, 4))
    n = max(_count(rng), group + 1)
    colour = _pick(rng, COLOURS)
    other_colours = _others(COLOURS, colour)
    if largest:
        target_size, group_size, foil_size = (0.24, 0.33), (0.13, 0.2), (0.36, 0.46)
    else:
        target_size, group_size, foil_size = (0.19, 0.25), (0.3, 0.42), (0.13, 0.16)
    target = b.piece(colour, _pick(rng, _COMPACT), float(rng.uniform(*target_size)))
    mates = [b.piece(colour, _pick(rng, _COMPACT), float(rng.uniform(*group_size))) for _ in range(group - 1)]
    foil_shapes = _COMPACT if largest else ["ball", "square", "triangle", "cup"]
    foil = b.piece(_pick(rng, other_colours), _pick(rng, foil_shapes), float(rng.uniform(*foil_size)))
    rest = [b.piece(_pick(rng, other_colours), _pick(rng, SHAPES), _default_size(rng))
            for _ in range(n - group - 1)]
    for mate in mates:  # the target must be clearly bigger (smaller) than every mate
        big, small = (target, mate) if largest else (mate, target)
        if big.area < 1.8 * small.area or big.bbox_area < 1.3 * small.bbox_area:
            raise _Retry
    big, small = (foil, target) if largest else (target, foil)
    if big.area < 1.2 * small.area or big.bbox_area <= small.bbox_area:
        raise _Retry
    return target, mates + [foil] + rest, {}


def _plan_odd_one_out(b: _Builder):
    """All objects share shape, colour and texture except the target, which differs in exactly
    one of shape or colour; sizes are similar and the texture looks the same (stripe angle,
    shade) so nothing else singles an object out."""
    rng = b.rng
    n = _count(rng)
    texture, style = _pick(rng, TEXTURES), _texture_style(rng)
    shape, colour = _pick(rng, SHAPES), _pick(rng, COLOURS)
    sizes = [float(rng.uniform(0.2, 0.28)) for _ in range(n)]
    if rng.random() < 0.5:
        odd_shape, odd_colour, kind = _pick(rng, _others(SHAPES, shape)), colour, "shape"
        extra = {"a_shape": f"{_article(odd_shape)} {odd_shape}", "others": _PLURALS[shape]}
    else:
        odd_shape, odd_colour, kind = shape, _pick(rng, _others(COLOURS, colour)), "colour"
        extra = {"others": colour}
    target = b.piece(odd_colour, odd_shape, sizes[0], texture, style)
    others = [b.piece(colour, shape, size, texture, style) for size in sizes[1:]]
    return target, others, {**extra, "kind": kind}


_PLANS = {
    "roll": _plan_roll,
    "colour_knowledge": _plan_colour_knowledge,
    "largest_of_colour": lambda b: _plan_extreme_of_colour(b, True),
    "smallest_of_colour": lambda b: _plan_extreme_of_colour(b, False),
    "odd_one_out": _plan_odd_one_out,
    "hold_water": _plan_hold_water,
}


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# ---------------------------------------------------------------------------------- placement


def _place(pieces: list[_Piece], width: int, height: int, rng: np.random.Generator,
           tries: int = 60) -> list[tuple[int, int]]:
    """Top-left offsets so that no two pieces come closer than a small gap (biggest first)."""
    gap = max(4, int(round(0.025 * min(width, height))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    occupied = np.zeros((height, width), bool)
    offsets: list[tuple[int, int] | None] = [None] * len(pieces)
    for index in sorted(range(len(pieces)), key=lambda i: -pieces[i].bbox_area):
        piece = pieces[index]
        h, w = piece.mask.shape
        padded = np.zeros((h + 2 * gap, w + 2 * gap), np.uint8)
        padded[gap:gap + h, gap:gap + w] = piece.mask
        grown = cv2.dilate(padded, kernel).astype(bool)
        if w + 2 * gap > width or h + 2 * gap > height:
            raise _Retry
        for _ in range(tries):
            x = int(rng.integers(gap, width - gap - w + 1))
            y = int(rng.integers(gap, height - gap - h + 1))
            if not (occupied[y - gap:y + h + gap, x - gap:x + w + gap] & grown).any():
                occupied[y:y + h, x:x + w] |= piece.mask
                offsets[index] = (x, y)
                break
        else:
            raise _Retry
    return offsets  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Float32 (H, W, 3): plain, vertical/horizontal gradient or lightly noisy grey/beige."""

    def tone() -> np.ndarray:
        value = rng.uniform(105, 180)
        tint = [(0, 0, 0), (10, 5, -10), (14, 8, -6), (-4, 0, 6), (6, 6, -4)][int(rng.integers(5))]
        return (value + np.asarray(tint, float)).astype(np.float32)

    kind = _pick(rng, ("plain", "vertical", "horizontal", "noise"))
    first = tone()
    if kind in ("vertical", "horizontal"):
        second = tone()
        if kind == "vertical":
            ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None] * np.ones((1, width, 1), np.float32)
        else:
            ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 1), np.float32)
        return first * (1 - ramp) + second * ramp
    image = np.broadcast_to(first, (height, width, 3)).copy()
    if kind == "noise":
        image += 5 * rng.standard_normal((height, width, 1), dtype=np.float32)
        image += 2 * rng.standard_normal((height, width, 3), dtype=np.float32)
    return image


# Which shades keep a colour's name: d(arker), l(ighter). A lighter red looks pink, a darker
# orange red and a darker yellow olive; the others take either.
_SHADE_DIRECTIONS = {"red": "d", "orange": "l", "yellow": "l"}


def _texture_style(rng: np.random.Generator) -> dict:
    """How a texture looks: stripe angle, pattern period (fraction of the short side), whether
    the shade is darker or lighter. Objects of an odd-one-out scene share one style."""
    return {"angle": float(_pick(rng, (0, 45, 90, 135))), "period": float(rng.uniform(0.03, 0.045)),
            "dot_period": float(rng.uniform(0.04, 0.055)), "darker": bool(rng.random() < 0.5)}


def _shade(colour: str, base: np.ndarray, darker: bool) -> np.ndarray:
    """A darker or lighter shade of the same hue for stripes/dots (keeps the colour's name)."""
    if colour == "white":
        return base * 0.85
    if colour == "black":
        return base + 45
    directions = _SHADE_DIRECTIONS.get(colour, "dl")
    if ("d" if darker else "l") not in directions:
        darker = not darker
    if darker:
        return base * 0.8
    return base + (255 - base) * (0.2 if colour == "orange" else 0.3)  # orange sits between red and yellow


def _texture_pattern(texture: str, h: int, w: int, style: dict, short: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Bool (h, w): where the shade goes (the pattern's phase is random)."""
    if texture == "solid":
        return np.zeros((h, w), bool)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if texture == "stripes":
        period = max(6.0, short * style["period"])
        angle = np.deg2rad(style["angle"])
        along = xs * np.cos(angle) + ys * np.sin(angle) + rng.uniform(0, period)
        return np.mod(along, period) < period * 0.42
    if texture == "dots":
        period = max(7.0, short * style["dot_period"])
        radius = period * 0.27
        dx = np.mod(xs + rng.uniform(0, period), period) - period / 2
        dy = np.mod(ys + rng.uniform(0, period), period) - period / 2
        return dx * dx + dy * dy < radius * radius
    raise ValueError(f"unknown texture {texture!r}")


def _render(pieces: list[_Piece], offsets, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float32 (H, W, 3): the background with every piece painted inside its own mask only."""
    height, width = background.shape[:2]
    image = background.copy()
    short = min(width, height)
    for piece, (x, y) in zip(pieces, offsets):
        h, w = piece.mask.shape
        base = np.clip(np.asarray(PALETTE[piece.colour], float) + rng.integers(-8, 9, 3), 0, 255)
        style = piece.style or _texture_style(rng)
        patch = np.empty((h, w, 3), np.float32)
        patch[:] = base
        pattern = _texture_pattern(piece.texture, h, w, style, short, rng)
        patch[pattern] = np.clip(_shade(piece.colour, base, style["darker"]), 0, 255)
        region = image[y:y + h, x:x + w]
        region[piece.mask] = patch[piece.mask]
    return image


# ------------------------------------------------------------------------------------- scenes


def _phrasing_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    return "test" if split == "test" else "train"


def make_scene(rng: np.random.Generator, query_type: str, size: tuple[int, int] = DEFAULT_SIZE,
               split: str = "train") -> Scene:
    """One scene of ``query_type`` at ``size`` = (width, height), with the phrasings of ``split``.

    Deterministic given the generator's state. The returned :class:`Scene` has exactly one
    valid target, ``scene.objects[scene.target_index]``.
    """
    if query_type not in _PLANS:
        raise ValueError(f"unknown query type {query_type!r} (one of {', '.join(QUERY_TYPES)})")
    phrasing = _phrasing_split(split)
    width, height = int(size[0]), int(size[1])
    if min(width, height) < 48:
        raise ValueError(f"image size {width}x{height} is too small (short side >= 48)")
    builder = _Builder(rng, width, height)
    for _ in range(500):
        try:
            target, others, slots = _PLANS[query_type](builder)
            pieces = [target] + others
            order = rng.permutation(len(pieces))  # the target's position is random
            pieces = [pieces[i] for i in order]
            target_index = int(np.flatnonzero(order == 0)[0])
            offsets = _place(pieces, width, height, rng)
        except _Retry:
            continue
        break
    else:  # pragma: no cover - only for absurd sizes
        raise RuntimeError(f"could not lay out a {query_type} scene at {width}x{height}")

    background = _background(rng, width, height)
    image = _render(pieces, offsets, background, rng)
    gain = np.float32(rng.uniform(0.92, 1.08))  # per-image brightness jitter
    rgb = np.clip(np.rint(image * gain), 0, 255).astype(np.uint8)
    plain = np.clip(np.rint(background * gain), 0, 255).astype(np.uint8)

    objects = []
    for piece, (x, y) in zip(pieces, offsets):
        polygon = piece.polygon + np.array([x, y], np.int32)
        objects.append(SceneObject(f"{piece.colour} {piece.shape}", piece.colour, piece.shape,
                                   polygon, polygon_mask(polygon, height, width), piece.texture))

    chosen = objects[target_index]
    cue = slots.get("cue", "")
    fields = {"colour": chosen.colour, "shape": chosen.shape, "cue": cue,
              "Cue": cue[:1].upper() + cue[1:], **{k: v for k, v in slots.items() if k != "cue"}}
    query = _pick(rng, PHRASINGS[query_type][phrasing]).format(**fields)
    explanation_key = f"odd_one_out_{slots['kind']}" if query_type == "odd_one_out" else query_type
    explanation = _pick(rng, EXPLANATIONS[explanation_key]).format(**fields)
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


def write_split(folder: str | Path, split: str, count: int, seed: int,
                size: tuple[int, int] = DEFAULT_SIZE, progress: bool = False) -> Path:
    """Write ``count`` samples of ``split`` into ``folder`` (created): ``00000.jpg`` + ``00000.json``, ...

    Sample ``i`` has query type ``QUERY_TYPES[i % 6]`` (balanced) and is generated from
    :func:`scene_rng` ``(seed, split, i)``, so the output is deterministic given (split, count,
    seed, size). Numbered sample files (``NNNNN.jpg/png/json``) left from an earlier run are
    removed first. Returns the folder.
    """
    _phrasing_split(split)
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
        scene = make_scene(scene_rng(seed, split, index), QUERY_TYPES[index % len(QUERY_TYPES)], size, split)
        bgr = cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / f"{index:05d}.jpg"), bgr, _JPEG_PARAMS):
            raise OSError(f"cannot write {folder / f'{index:05d}.jpg'}")
        (folder / f"{index:05d}.json").write_text(json.dumps(scene_annotation(scene)) + "\n")
    return folder


# ----------------------------------------------------------------------------------- baseline


def any_object_baseline(folder: str | Path) -> dict:
    """The "pick any object" baseline of a split folder written by :func:`write_split`.

    Per sample: the expected IoU of a prediction that is one of the scene's objects chosen
    uniformly at random, i.e. the mean over ``objects`` of IoU(object mask, target mask), masks
    rasterised with ``data.rasterize_shapes`` and IoU as in ``lisa_ros.evaluate.metrics``.
    Returns ``{"giou": mean over samples, "count": N, "per_type": {type: gIoU},
    "per_type_counts": {type: N}, "per_sample": [values in read_reasonseg order]}``.
    """
    from lisa_ros.evaluate.metrics import intersection_union, query_iou
    from lisa_ros.train.data import DataError, rasterize_shapes, read_reasonseg

    values: list[float] = []
    by_type: dict[str, list[float]] = {}
    for sample in read_reasonseg(folder):
        data = json.loads(sample.image_path.with_suffix(".json").read_text())
        if "objects" not in data:
            raise DataError(f"{sample.image_path.with_suffix('.json')} has no 'objects' list")
        if "imageHeight" in data and "imageWidth" in data:
            height, width = int(data["imageHeight"]), int(data["imageWidth"])
        else:
            height, width = sample.rgb().shape[:2]
        target = rasterize_shapes(data["shapes"], height, width)
        ious = [query_iou(*intersection_union(
                    rasterize_shapes([{"label": "object", "points": obj["points"]}], height, width), target))
                for obj in data["objects"]]
        value = float(np.mean(ious)) if ious else 0.0
        values.append(value)
        by_type.setdefault(str(data.get("query_type", "unknown")), []).append(value)
    return {
        "giou": float(np.mean(values)),
        "count": len(values),
        "per_type": {name: float(np.mean(v)) for name, v in sorted(by_type.items())},
        "per_type_counts": {name: len(v) for name, v in sorted(by_type.items())},
        "per_sample": values,
    }


# ---------------------------------------------------------------------------------------- CLI


def _parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, not {text!r}")
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lisa_ros.train.reasoning_scenes",
        description="Write procedural reasoning-segmentation splits in the ReasonSeg format.")
    parser.add_argument("out_dir", help="output folder; each split goes to OUT_DIR/<split>/")
    parser.add_argument("--splits", default="train,val,test", help="comma-separated (train,val,test)")
    parser.add_argument("--count-train", type=int, default=3000)
    parser.add_argument("--count-val", type=int, default=200)
    parser.add_argument("--count-test", type=int, default=200)
    parser.add_argument("--seed-offset", type=int, default=0, help="added to each split's seed")
    parser.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, help="WIDTHxHEIGHT (320x240)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        parser.error(f"unknown split(s) {unknown} (choose from {', '.join(SPLITS)})")
    counts = {"train": args.count_train, "val": args.count_val, "test": args.count_test}
    for split in splits:
        seed = SPLIT_SEEDS[split] + args.seed_offset
        if seed < 0:
            parser.error("--seed-offset makes a seed negative")
        folder = write_split(Path(args.out_dir) / split, split, counts[split], seed, args.size,
                             progress=not args.no_progress)
        per_type = Counter(QUERY_TYPES[i % len(QUERY_TYPES)] for i in range(counts[split]))
        summary = ", ".join(f"{name} {per_type[name]}" for name in QUERY_TYPES)
        print(f"{split}: {counts[split]} scenes (seed {seed}) in {folder}: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
