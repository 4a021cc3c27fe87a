"""Scene layout: object outlines, the plan of each query type, and non-overlapping placement.

A *plan* draws the target and the other objects of one query type (colours, shapes, sizes) as
:class:`Piece` objects in their own bounding boxes; :func:`place` puts them in the image without
touching. A plan that does not fit raises :class:`PlanRetry` and is drawn again.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lisa_ros.data.scenes.rendering import texture_style
from lisa_ros.data.scenes.vocabulary import (COLOUR_CUES, COLOURS, CONTAINER_SHAPES, MIN_SIDE_FRACTION, PLURALS,
                                             ROUND_SHAPES, SHAPE_MIN_EXTENT, SHAPES, TEXTURES, pick)


@dataclass
class Piece:
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


class PlanRetry(Exception):
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


class Builder:
    """Turns (colour, shape, size fraction) into a local polygon + mask for one image size."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, camera: dict | None = None):
        self.rng = rng
        self.width, self.height = width, height
        self.short = min(width, height)
        self.camera = camera
        self.min_side = (camera["min_side"] if camera else MIN_SIDE_FRACTION) * self.short
        self.scale = 1.0  # camera-like scenes draw one per layout attempt (larger and smaller objects)

    def colours(self) -> tuple[str, ...]:
        """The colours an object may take here: a camera-like background near white (dark) hides
        white (black) objects."""
        return tuple(c for c in COLOURS if c not in (self.camera or {}).get("hidden", ()))

    def piece(self, colour: str, shape: str, size: float, texture: str | None = None,
              style: dict | None = None) -> Piece:
        """``size`` is a fraction of the short side, times :attr:`scale` (raised to the shape's
        minimum). Camera-like scenes paint solid colours only."""
        minimum = SHAPE_MIN_EXTENT[shape] * (self.camera["min_extent"] if self.camera else 1.0)
        extent = max(size * self.scale, minimum) * self.short
        if self.camera:
            texture = "solid"
        outline = _outline(shape, extent, self.min_side, self.rng)
        polygon = np.round(outline - outline.min(axis=0)).astype(np.int32)
        w, h = (polygon.max(axis=0) + 1).tolist()
        if min(w, h) < self.min_side or w > self.width - 8 or h > self.height - 8:
            raise PlanRetry
        mask = polygon_mask(polygon, h, w)
        if texture is None:
            texture = TEXTURES[int(self.rng.integers(len(TEXTURES)))]
        return Piece(colour, shape, polygon, mask, texture, style)


# --------------------------------------------------------------------------------- scene plans


def _others(options, *excluded) -> list[str]:
    return [option for option in options if option not in excluded]


def _count(rng: np.random.Generator, low: int = 3, high: int = 5) -> int:
    return int(rng.integers(low, high + 1))


def _default_size(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.14, 0.36))


def _plan_only_one_of_a_kind(b: Builder, shape: str, kind: tuple[str, ...], target_size):
    """The target is the scene's only object of shape ``kind`` (drawn as ``shape``); the others
    take any other shape. ``target_size(rng)`` draws the target's size (after its colour)."""
    rng = b.rng
    n = _count(rng)
    target = b.piece(pick(rng, b.colours()), shape, target_size(rng))
    others = [b.piece(pick(rng, b.colours()), pick(rng, _others(SHAPES, *kind)), _default_size(rng))
              for _ in range(n - 1)]
    return target, others, {}


def _plan_roll(b: Builder):
    return _plan_only_one_of_a_kind(b, "ball", ROUND_SHAPES, _default_size)


def _plan_hold_water(b: Builder):
    return _plan_only_one_of_a_kind(b, "cup", CONTAINER_SHAPES, lambda rng: float(rng.uniform(0.18, 0.36)))


def _plan_colour_knowledge(b: Builder):
    rng = b.rng
    n = _count(rng)
    colour = pick(rng, b.colours())
    target = b.piece(colour, pick(rng, SHAPES), _default_size(rng))
    others = [b.piece(pick(rng, _others(b.colours(), colour)), pick(rng, SHAPES), _default_size(rng))
              for _ in range(n - 1)]
    return target, others, {"cue": pick(rng, COLOUR_CUES[colour])}


_COMPACT = _others(SHAPES, "bar")  # shapes whose area follows their extent


def _plan_extreme_of_colour(b: Builder, largest: bool):
    """2-3 objects of one colour, the target clearly the largest (smallest) of them, and at least
    one object of another colour clearly bigger (smaller) than the target."""
    rng = b.rng
    group = int(rng.integers(2, 4))
    n = max(_count(rng), group + 1)
    colour = pick(rng, b.colours())
    other_colours = _others(b.colours(), colour)
    if largest:
        target_size, group_size, foil_size = (0.24, 0.33), (0.13, 0.2), (0.36, 0.46)
    else:
        target_size, group_size, foil_size = (0.19, 0.25), (0.3, 0.42), (0.13, 0.16)
    target = b.piece(colour, pick(rng, _COMPACT), float(rng.uniform(*target_size)))
    mates = [b.piece(colour, pick(rng, _COMPACT), float(rng.uniform(*group_size))) for _ in range(group - 1)]
    foil_shapes = _COMPACT if largest else ["ball", "square", "triangle", "cup"]
    foil = b.piece(pick(rng, other_colours), pick(rng, foil_shapes), float(rng.uniform(*foil_size)))
    rest = [b.piece(pick(rng, other_colours), pick(rng, SHAPES), _default_size(rng))
            for _ in range(n - group - 1)]
    for mate in mates:  # the target must be clearly bigger (smaller) than every mate
        big, small = (target, mate) if largest else (mate, target)
        if big.area < 1.8 * small.area or big.bbox_area < 1.3 * small.bbox_area:
            raise PlanRetry
    big, small = (foil, target) if largest else (target, foil)
    if big.area < 1.2 * small.area or big.bbox_area <= small.bbox_area:
        raise PlanRetry
    return target, mates + [foil] + rest, {}


def _plan_odd_one_out(b: Builder):
    """All objects share shape, colour and texture except the target, which differs in exactly
    one of shape or colour; sizes are similar and the texture looks the same (stripe angle,
    shade) so nothing else singles an object out."""
    rng = b.rng
    n = _count(rng)
    texture, style = pick(rng, TEXTURES), texture_style(rng)
    shape, colour = pick(rng, SHAPES), pick(rng, b.colours())
    sizes = [float(rng.uniform(0.2, 0.28)) for _ in range(n)]
    if rng.random() < 0.5:
        odd_shape, odd_colour, kind = pick(rng, _others(SHAPES, shape)), colour, "shape"
        extra = {"a_shape": f"{_article(odd_shape)} {odd_shape}", "others": PLURALS[shape]}
    else:
        odd_shape, odd_colour, kind = shape, pick(rng, _others(b.colours(), colour)), "colour"
        extra = {"others": colour}
    target = b.piece(odd_colour, odd_shape, sizes[0], texture, style)
    others = [b.piece(colour, shape, size, texture, style) for size in sizes[1:]]
    return target, others, {**extra, "kind": kind}


PLANS = {
    "roll": _plan_roll,
    "colour_knowledge": _plan_colour_knowledge,
    "largest_of_colour": lambda b: _plan_extreme_of_colour(b, True),
    "smallest_of_colour": lambda b: _plan_extreme_of_colour(b, False),
    "odd_one_out": _plan_odd_one_out,
    "hold_water": _plan_hold_water,
}


# "Nothing here fits" (issue 12): the same scenes and queries with no object that answers them.
# Each returns (None, objects, slots): no target.
def _plan_none_of_a_kind(b: Builder, kind: frozenset):
    rng = b.rng
    return None, [b.piece(pick(rng, b.colours()), pick(rng, _others(SHAPES, *kind)), _default_size(rng))
                  for _ in range(_count(rng))], {}


def _plan_no_colour(b: Builder, with_cue: bool):
    """No object of the colour the query names."""
    rng = b.rng
    colour = pick(rng, b.colours())
    objects = [b.piece(pick(rng, _others(b.colours(), colour)), pick(rng, SHAPES), _default_size(rng))
               for _ in range(_count(rng))]
    slots = {"colour": colour}
    if with_cue:
        slots["cue"] = pick(rng, COLOUR_CUES[colour])
    return None, objects, slots


def _plan_all_alike(b: Builder):
    """Objects of one shape, colour and texture, similar sizes: none is the odd one out."""
    rng = b.rng
    texture, style = pick(rng, TEXTURES), texture_style(rng)
    shape, colour = pick(rng, SHAPES), pick(rng, b.colours())
    return None, [b.piece(colour, shape, float(rng.uniform(0.2, 0.28)), texture, style)
                  for _ in range(_count(rng))], {"colour": colour, "shape": shape}


NOTHING_FITS_PLANS = {
    "roll": lambda b: _plan_none_of_a_kind(b, ROUND_SHAPES),
    "colour_knowledge": lambda b: _plan_no_colour(b, True),
    "largest_of_colour": lambda b: _plan_no_colour(b, False),
    "smallest_of_colour": lambda b: _plan_no_colour(b, False),
    "odd_one_out": _plan_all_alike,
    "hold_water": lambda b: _plan_none_of_a_kind(b, CONTAINER_SHAPES),
}


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# ---------------------------------------------------------------------------------- placement


def place(pieces: list[Piece], width: int, height: int, rng: np.random.Generator,
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
            raise PlanRetry
        for _ in range(tries):
            x = int(rng.integers(gap, width - gap - w + 1))
            y = int(rng.integers(gap, height - gap - h + 1))
            if not (occupied[y - gap:y + h + gap, x - gap:x + w + gap] & grown).any():
                occupied[y:y + h, x:x + w] |= piece.mask
                offsets[index] = (x, y)
                break
        else:
            raise PlanRetry
    return offsets  # type: ignore[return-value]
