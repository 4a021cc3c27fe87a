"""Frame-to-frame motion of one object: dense optical flow, then a robust similarity fit.

OpenCV's DIS optical flow (Kroeger et al., 2016) over the whole working-size frame (a few ms),
then :func:`cv2.estimateAffinePartial2D` with RANSAC over flow vectors sampled inside the
object's visible pixels: rotation, uniform scale and translation, so a rigid object keeps its
shape while it moves, turns or comes nearer. Points are sampled from the *visible* mask only, so
an occluder sliding over the object does not drag it along.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_POINTS = 8  # fewer flow vectors than this: no fit (the object is hidden or too small)
MAX_POINTS = 400


@dataclass
class MotionFit:
    """``matrix``: 3x3 float64, working-size pixels of the previous frame -> the new frame;
    ``inliers``: share of sampled vectors that agree with it (0 when no fit); ``points``: how
    many vectors were sampled."""

    matrix: np.ndarray
    inliers: float
    points: int

    @property
    def found(self) -> bool:
        return self.points > 0


def identity() -> np.ndarray:
    return np.eye(3)


class FlowField:
    """Dense flow between consecutive grey frames (``(h, w)`` uint8, the working size)."""

    def __init__(self):
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def compute(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """``(h, w, 2)`` float32: where each pixel of ``previous`` moved (dx, dy), in pixels."""
        return self._dis.calc(previous, current, None)


def fit_similarity(flow: np.ndarray, points_xy: np.ndarray, rng: np.random.Generator, threshold_px: float = 1.0,
                   max_scale_step: float = 0.08) -> MotionFit:
    """The similarity transform that moves ``points_xy`` (``(N, 2)`` float32 (x, y) in the flow's
    pixels, e.g. an object's visible pixels) along ``flow``; an identity :class:`MotionFit` with
    ``points == 0`` when there are fewer than :data:`MIN_POINTS` or RANSAC finds nothing. At most
    :data:`MAX_POINTS` are used (a random subset). The scale change per frame is clipped to
    ``1 +- max_scale_step`` (a fit on a sliver can blow up)."""
    if len(points_xy) < MIN_POINTS:
        return MotionFit(identity(), 0.0, 0)
    if len(points_xy) > MAX_POINTS:
        points_xy = points_xy[rng.choice(len(points_xy), MAX_POINTS, replace=False)]
    height, width = flow.shape[:2]
    source = points_xy.astype(np.float32)
    xs = np.clip(np.rint(source[:, 0]).astype(int), 0, width - 1)
    ys = np.clip(np.rint(source[:, 1]).astype(int), 0, height - 1)
    target = source + flow[ys, xs]
    affine, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                  ransacReprojThreshold=threshold_px, maxIters=200)
    if affine is None:
        return MotionFit(identity(), 0.0, 0)
    scale = float(np.hypot(affine[0, 0], affine[1, 0]))
    if abs(scale - 1) > max_scale_step:
        # Bound the scale about the points' centre, which keeps the fitted move of the centre.
        centre = source.mean(axis=0)
        moved_centre = affine[:, :2] @ centre + affine[:, 2]
        bounded = float(np.clip(scale, 1 - max_scale_step, 1 + max_scale_step))
        affine[:, :2] *= bounded / scale
        affine[:, 2] = moved_centre - affine[:, :2] @ centre
    matrix = np.vstack([affine, [0.0, 0.0, 1.0]])
    return MotionFit(matrix, float(inliers.mean()) if inliers is not None else 0.0, len(source))
