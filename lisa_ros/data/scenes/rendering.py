"""Scene rendering: backgrounds, textures (stripes, dots) in shades that keep a colour's name, and
painting each object exactly inside its own mask."""
from __future__ import annotations

import numpy as np

from lisa_ros.data.scenes.vocabulary import PALETTE, pick


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Float32 (H, W, 3): plain, vertical/horizontal gradient or lightly noisy grey/beige."""

    def tone() -> np.ndarray:
        value = rng.uniform(105, 180)
        tint = [(0, 0, 0), (10, 5, -10), (14, 8, -6), (-4, 0, 6), (6, 6, -4)][int(rng.integers(5))]
        return (value + np.asarray(tint, float)).astype(np.float32)

    kind = pick(rng, ("plain", "vertical", "horizontal", "noise"))
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


def camera_background(rng: np.random.Generator, width: int, height: int, tone: str) -> np.ndarray:
    """Float32 (H, W, 3) of a camera-like scene: ``tone`` "light" (near white, 200-245), "dark"
    (15-55) or "grey" (:func:`background`), lit unevenly (a smooth brightness ramp)."""
    if tone == "grey":
        image = background(rng, width, height)
    else:
        value = rng.uniform(200, 245) if tone == "light" else rng.uniform(15, 55)
        image = np.full((height, width, 3), value, np.float32) + rng.uniform(-6, 6, 3).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height)[..., None]
    return np.clip(image * (1 + 0.08 * (ramp - 0.5)), 0, 255)


def sensor_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """``image`` (float32 H, W, 3) with a camera's grain (sigma 2-4 grey levels)."""
    return image + float(rng.uniform(2, 4)) * rng.standard_normal(image.shape[:2] + (1,), dtype=np.float32)


# Which shades keep a colour's name: d(arker), l(ighter). A lighter red looks pink, a darker
# orange red and a darker yellow olive; the others take either.
_SHADE_DIRECTIONS = {"red": "d", "orange": "l", "yellow": "l"}


def texture_style(rng: np.random.Generator) -> dict:
    """How a texture looks: stripe angle, pattern period (fraction of the short side), whether
    the shade is darker or lighter. Objects of an odd-one-out scene share one style."""
    return {"angle": float(pick(rng, (0, 45, 90, 135))), "period": float(rng.uniform(0.03, 0.045)),
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


def render(pieces: list, offsets, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float32 (H, W, 3): the background with every piece (:class:`~lisa_ros.data.scenes.layout.Piece`)
    painted inside its own mask only."""
    height, width = background.shape[:2]
    image = background.copy()
    short = min(width, height)
    for piece, (x, y) in zip(pieces, offsets):
        h, w = piece.mask.shape
        base = np.clip(np.asarray(PALETTE[piece.colour], float) + rng.integers(-8, 9, 3), 0, 255)
        style = piece.style or texture_style(rng)
        patch = np.empty((h, w, 3), np.float32)
        patch[:] = base
        pattern = _texture_pattern(piece.texture, h, w, style, short, rng)
        patch[pattern] = np.clip(_shade(piece.colour, base, style["darker"]), 0, 255)
        region = image[y:y + h, x:x + w]
        region[piece.mask] = patch[piece.mask]
    return image
