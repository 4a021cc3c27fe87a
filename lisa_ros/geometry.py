"""3D from a mask, a registered depth image and pinhole intrinsics. ROS-free (numpy).

Depth is registered (aligned to the colour image, same size) and in metres with NaN where there
is no return (see ``lisa_ros.ros.conversions.depth_to_meters``). Points are in the camera's
optical frame (REP 103: z forward, x right, y down).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the (rectified) colour image, from sensor_msgs/CameraInfo ``k``."""

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
        if len(k) != 9 or k[0] <= 0 or k[4] <= 0:
            raise ValueError("camera_info has no valid intrinsics (K must hold fx, fy > 0)")
        return cls(k[0], k[4], k[2], k[5], int(width), int(height))

    def scaled_to(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution (a camera_info for a resized image)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, width, height)


@dataclass(frozen=True)
class MaskGeometry:
    """Robust 3D summary of a mask: the per-axis median point, the extent between the 5th and
    95th percentiles per axis, and how many mask pixels were used."""

    centroid: tuple[float, float, float]
    extent: tuple[float, float, float]
    valid_points: int

    @property
    def is_valid(self) -> bool:
        return self.valid_points > 0


NO_GEOMETRY = MaskGeometry((math.nan, math.nan, math.nan), (math.nan, math.nan, math.nan), 0)


def mask_geometry(mask: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics,
                  min_depth: float = 0.05, max_depth: float = 50.0, min_points: int = 10,
                  depth_band_m: float = 0.15, depth_band_ratio: float = 0.15) -> MaskGeometry:
    """Back-project the mask's pixels with valid depth; NaN geometry when too few are valid.

    Robustness: NaN/zero (no return) and out-of-range depths are skipped; points farther than
    ``max(depth_band_m, depth_band_ratio * median depth)`` from the median depth are dropped
    (flying pixels at object edges, background seen through holes); the centroid is the per-axis
    median and the extent spans the 5th-95th percentiles, so the rest cannot pull them either.
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
    # Depth outliers (background through holes, flying pixels at edges) would still shift the
    # x/y medians through back-projection: keep the points near the median depth first.
    z_median = float(np.median(z))
    near = np.abs(z - z_median) <= max(depth_band_m, depth_band_ratio * z_median)
    if int(near.sum()) >= min_points:
        rows, cols, z = rows[near], cols[near], z[near]
    x = (cols - intrinsics.cx) * z / intrinsics.fx
    y = (rows - intrinsics.cy) * z / intrinsics.fy
    points = np.stack([x, y, z], axis=1)
    centroid = np.median(points, axis=0)
    low, high = np.percentile(points, [5, 95], axis=0)
    return MaskGeometry(tuple(float(v) for v in centroid), tuple(float(v) for v in high - low), int(z.size))
