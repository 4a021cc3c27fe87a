"""3D from a mask, a registered depth image and pinhole intrinsics. ROS-free (numpy).

Depth is registered (aligned to the colour image, same size) and in metres with NaN where there
is no return (see ``lisa_ros.images.depth_to_meters``). Points are in the camera's
optical frame (REP 103: z forward, x right, y down).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import transforms3d.quaternions as quaternions


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour image: from sensor_msgs/CameraInfo ``k`` (raw image) or
    ``p`` (rectified image)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k, width: int, height: int) -> "Intrinsics":
        """From the row-major 3x3 camera matrix K = [fx 0 cx; 0 fy cy; 0 0 1]."""
        k = [float(v) for v in k]
        if len(k) != 9 or not all(math.isfinite(v) for v in k) or not (k[0] > 0 and k[4] > 0):
            raise ValueError("camera_info has no valid intrinsics (K must be finite with fx, fy > 0)")
        return cls(k[0], k[4], k[2], k[5], int(width), int(height))

    @classmethod
    def from_p(cls, p, width: int, height: int) -> "Intrinsics":
        """From the row-major 3x4 projection matrix P = [fx' 0 cx' Tx; 0 fy' cy' Ty; 0 0 1 0]: the
        intrinsics of the *rectified* image (sensor_msgs/CameraInfo; image_proc's image_rect)."""
        p = [float(v) for v in p]
        if len(p) != 12 or not all(math.isfinite(v) for v in p) or not (p[0] > 0 and p[5] > 0):
            raise ValueError("camera_info has no valid projection (P must be finite with fx, fy > 0)")
        return cls(p[0], p[5], p[2], p[6], int(width), int(height))

    def scaled_to(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution (a camera_info for a resized image)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, width, height)


@dataclass(frozen=True)
class MaskGeometry:
    """Robust 3D summary of a mask's object points (optical frame, metres).

    ``centroid``: the per-axis median of the object's points (not the centre of its box: a few
    stray points cannot move it); ``extent``: the span between the 1st and 99th percentiles along
    the optical frame's x, y, z; ``orientation``: the principal axes of the points as a unit
    quaternion ``(w, x, y, z)`` (:func:`principal_axes`); ``principal_extent``: the 1st-99th
    percentile span along those axes (x = largest spread); ``valid_points``: how many mask pixels
    had a depth kept as the object's (every valid one when fewer than ``min_points`` were kept);
    ``points``: those points, ``(valid_points, 3)`` float32 (empty without depth).
    """

    centroid: tuple[float, float, float]
    extent: tuple[float, float, float]
    valid_points: int
    orientation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    principal_extent: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32), repr=False, compare=False)

    @property
    def is_valid(self) -> bool:
        return self.valid_points > 0


NO_GEOMETRY = MaskGeometry((math.nan, math.nan, math.nan), (math.nan, math.nan, math.nan), 0)


def principal_axes(points: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation whose columns are the principal axes of ``points`` (``(N, 3)``, optical
    frame): x the direction of largest spread, y the second, z the least (a flat object's
    normal). Signs, so that the frame is reproducible: z points towards the camera (against the
    ray to ``centroid``), x's largest component is positive, y = z cross x (right-handed)."""
    centred = points - centroid
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending variance
    x, z = vectors[:, 2], vectors[:, 0]
    if float(np.dot(z, centroid)) > 0:
        z = -z
    if x[int(np.argmax(np.abs(x)))] < 0:
        x = -x
    return np.stack([x, np.cross(z, x), z], axis=1)


# The object's depths: the most populated run of depth bins (DEPTH_BIN_M, or DEPTH_BIN_RATIO of
# the median depth when larger), a bin counting when it holds OCCUPIED_SHARE of the points (and
# at least 2), runs bridging EMPTY_BINS_BRIDGED empty bins (depth quantisation at range).
DEPTH_BIN_M = 0.01
DEPTH_BIN_RATIO = 0.01
OCCUPIED_SHARE = 0.002
EMPTY_BINS_BRIDGED = 1


def object_depths(z: np.ndarray) -> np.ndarray:
    """Which of the depths ``z`` (metres, finite, shape ``(N,)``) belong to the object.

    The object's surface is dense and continuous in depth, however slanted (a ladder from 1.0
    to 1.8 m fills every bin between); background seen through holes is another dense run,
    separated by a gap; flying pixels at edges are sparse, so their bins do not count and do
    not bridge the gap. Returns a boolean ``(N,)`` array: the most populated run."""
    z_median = float(np.median(z))
    bin_m = max(DEPTH_BIN_M, DEPTH_BIN_RATIO * z_median)
    low = float(z.min())
    index = np.floor((z - low) / bin_m).astype(np.int64)
    counts = np.bincount(index)
    occupied = counts >= max(2, OCCUPIED_SHARE * z.size)
    best, best_points, start, empty = (0, 0), -1, None, 0
    for i, full in enumerate(np.append(occupied, False)):
        if full:
            start, empty = (i if start is None else start), 0
            continue
        empty += 1
        if start is not None and (empty > EMPTY_BINS_BRIDGED or i == occupied.size):
            end = i - empty + 1  # one past the run's last occupied bin
            points = int(counts[start:end].sum())
            if points > best_points:
                best, best_points = (start, end), points
            start = None
    return (index >= best[0]) & (index < best[1])


def mask_geometry(mask: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics,
                  min_depth: float = 0.05, max_depth: float = 50.0, min_points: int = 10) -> MaskGeometry:
    """Back-project the mask's pixels with valid depth; NaN geometry when too few are valid.

    ``mask``: ``(H, W)`` bool; ``depth_m``: ``(H, W)`` registered depth in metres, NaN or 0 where
    there is no return; ``intrinsics``: of the colour image (scaled when its size differs).
    NaN/zero and out-of-range depths are skipped; of the rest, only the object's run of depths
    (:func:`object_depths`) is kept, so a slanted object stays whole while background through
    holes and flying pixels at edges are dropped. Raises ValueError when mask and depth differ
    in size.
    """
    if mask.shape != depth_m.shape:
        raise ValueError(f"mask {mask.shape} and depth {depth_m.shape} differ in size")
    if (intrinsics.width, intrinsics.height) != (mask.shape[1], mask.shape[0]):
        intrinsics = intrinsics.scaled_to(mask.shape[1], mask.shape[0])
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return NO_GEOMETRY
    z = depth_m[rows, cols].astype(np.float64)
    valid = np.isfinite(z) & (z >= min_depth) & (z <= max_depth)
    if int(valid.sum()) < min_points:
        return NO_GEOMETRY
    rows, cols, z = rows[valid], cols[valid], z[valid]
    # Outliers in depth would still move the x/y medians through back-projection: keep the
    # object's depths first.
    kept = object_depths(z)
    if int(kept.sum()) >= min_points:
        rows, cols, z = rows[kept], cols[kept], z[kept]
    x = (cols - intrinsics.cx) * z / intrinsics.fx
    y = (rows - intrinsics.cy) * z / intrinsics.fy
    points = np.stack([x, y, z], axis=1)
    centroid = np.median(points, axis=0)
    low, high = np.percentile(points, [1, 99], axis=0)
    axes = principal_axes(points, centroid)
    along = (points - centroid) @ axes
    axes_low, axes_high = np.percentile(along, [1, 99], axis=0)
    return MaskGeometry(tuple(float(v) for v in centroid), tuple(float(v) for v in high - low), int(z.size),
                        tuple(float(v) for v in quaternions.mat2quat(axes)),
                        tuple(float(v) for v in axes_high - axes_low), points.astype(np.float32))
