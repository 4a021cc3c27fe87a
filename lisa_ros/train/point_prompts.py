"""Point prompts: a reachable target for the [SEG] prompt token of a newly built model.

LISA turns the hidden state that predicted ``[SEG]`` into one sparse prompt token of SAM's mask
decoder, and the released checkpoints learned what that token means end to end over many GPU
hours. A new model trained for a few hundred CPU steps (the embedded one) learns much faster when
the token has a concrete target: the token SAM's own prompt encoder gives a positive point inside
the target object. Two pieces use it:

* a **decoder warm-up**: LiteMedSAM was trained on box prompts only, and its decoder ignores a
  lone point (mean IoU 0.003 on our scenes, against 0.88 for the box); a short warm-up on cached
  image embeddings teaches it to segment the object under one point, with the point anywhere well
  inside the object and the token perturbed, since a regressed token is never exact;
* a **point loss**: the mean squared distance between the projected [SEG] state and the token of
  the target's deepest interior point, which tells the language model *where* to point long before
  the mask losses alone would.

Neither changes the architecture: at inference the [SEG] state is projected and decoded as in LISA.
The point token itself is SAM maths: :func:`lisa_ros.model.sam.point_prompt_tokens`.
"""
from __future__ import annotations

import random

import cv2
import numpy as np


def _depth(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel outside ``mask`` (the image border counts as outside)."""
    return cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` pixel of a non-empty binary ``(H, W)`` mask that lies deepest inside it (the
    maximum of the distance transform; the centroid of a cup or a star can lie outside)."""
    distance = _depth(mask)
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return float(x), float(y)


def random_interior_point(mask: np.ndarray, rng: random.Random, depth: float = 0.5) -> tuple[float, float]:
    """A random pixel of ``mask`` at least ``depth`` x the deepest pixel's distance from its border."""
    distance = _depth(mask)
    ys, xs = np.nonzero(distance >= depth * distance.max())
    index = rng.randrange(len(xs))
    return float(xs[index]), float(ys[index])


def to_sam_frame(points: np.ndarray, resized_size: tuple[int, int], original_size: tuple[int, int]) -> np.ndarray:
    """``[N, 2]`` (x, y) source pixels -> the SAM input frame (resized by the long side, padded)."""
    scale = np.array([resized_size[1] / original_size[1], resized_size[0] / original_size[0]])
    return np.asarray(points, dtype=np.float64) * scale
