"""3D centroids and extents from a mask and registered depth, on scenes of known geometry."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lisa_ros.geometry import Intrinsics, mask_geometry

K = Intrinsics(fx=525.0, fy=520.0, cx=319.5, cy=239.5, width=640, height=480)


def box_scene(z=2.0):
    """A fronto-parallel box face at depth z covering columns 400..479 and rows 100..199."""
    depth = np.full((480, 640), 5.0, np.float32)  # a wall behind
    mask = np.zeros((480, 640), bool)
    mask[100:200, 400:480] = True
    depth[mask] = z
    return mask, depth


def expected_centre(z=2.0):
    u, v = (400 + 479) / 2, (100 + 199) / 2
    return ((u - K.cx) * z / K.fx, (v - K.cy) * z / K.fy, z)


def test_centroid_and_extent_of_a_box_face():
    mask, depth = box_scene()
    geometry = mask_geometry(mask, depth, K)
    assert geometry.valid_points == 8000
    np.testing.assert_allclose(geometry.centroid, expected_centre(), atol=1e-6)
    width_m = 80 * 2.0 / K.fx
    assert geometry.extent[0] == pytest.approx(0.98 * width_m, rel=0.05)  # 1st-99th percentile
    assert geometry.extent[2] == pytest.approx(0.0, abs=1e-9)


def test_holes_nans_zeros_and_outliers_do_not_move_the_centroid():
    mask, depth = box_scene()
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(mask)
    pick = rng.permutation(rows.size)
    depth[rows[pick[:1500]], cols[pick[:1500]]] = np.nan      # no return
    depth[rows[pick[1500:2500]], cols[pick[1500:2500]]] = 0.0  # zeros
    depth[rows[pick[2500:3000]], cols[pick[2500:3000]]] = 40.0  # flying pixels / background
    geometry = mask_geometry(mask, depth, K)
    assert geometry.valid_points == 8000 - 3000  # holes and outliers left out
    centre = expected_centre()
    assert geometry.centroid[2] == pytest.approx(2.0, abs=1e-6)
    assert geometry.centroid[0] == pytest.approx(centre[0], abs=0.01)
    assert geometry.centroid[1] == pytest.approx(centre[1], abs=0.01)


def test_a_slanted_object_stays_whole_while_holes_and_flying_pixels_are_dropped():
    """A board leaning away from the camera, 1.0 m at its top row to 1.8 m at its bottom, with
    background (4.0 m) seen through 10 % of it and 300 flying pixels between: every board pixel is
    kept and the extent in depth is the board's 0.8 m (within 5 %). (A fixed +-15 % depth band kept
    about half of it and said 0.38 m.)"""
    depth = np.full((480, 640), 4.0, np.float32)
    mask = np.zeros((480, 640), bool)
    mask[100:300, 200:400] = True
    ramp = np.linspace(1.0, 1.8, 200, dtype=np.float32)[:, None]
    depth[100:300, 200:400] = ramp
    rows, cols = np.nonzero(mask)
    pick = np.random.default_rng(1).permutation(rows.size)
    holes, flying = pick[:4000], pick[4000:4300]
    depth[rows[holes], cols[holes]] = 4.0
    depth[rows[flying], cols[flying]] = np.random.default_rng(2).uniform(1.85, 3.9, flying.size)
    geometry = mask_geometry(mask, depth, K)
    assert geometry.valid_points == rows.size - holes.size - flying.size
    assert geometry.extent[2] == pytest.approx(0.8, rel=0.05)
    assert geometry.centroid[2] == pytest.approx(1.4, abs=0.02)
    top_y, bottom_y = (100 - K.cy) * 1.0 / K.fy, (299 - K.cy) * 1.8 / K.fy  # its top and bottom rows
    assert geometry.extent[1] == pytest.approx(0.98 * (bottom_y - top_y), rel=0.05)  # 1st-99th percentile


@pytest.mark.parametrize("fill", [np.nan, 0.0, -1.0, np.inf, 100.0])
def test_no_valid_depth_gives_nan(fill):
    mask, depth = box_scene()
    depth[mask] = fill
    geometry = mask_geometry(mask, depth, K)
    assert not geometry.is_valid and all(math.isnan(v) for v in geometry.centroid)


def test_empty_mask_and_size_mismatch():
    _, depth = box_scene()
    assert not mask_geometry(np.zeros((480, 640), bool), depth, K).is_valid
    with pytest.raises(ValueError):
        mask_geometry(np.zeros((240, 320), bool), depth, K)


def test_intrinsics_of_another_resolution_are_scaled():
    mask, depth = box_scene()
    half = Intrinsics(fx=262.5, fy=260.0, cx=159.5, cy=119.5, width=320, height=240)
    np.testing.assert_allclose(mask_geometry(mask, depth, half).centroid, expected_centre(), atol=1e-6)


def test_camera_info_k_is_validated():
    assert Intrinsics.from_k([525, 0, 319.5, 0, 520, 239.5, 0, 0, 1], 640, 480) == K
    with pytest.raises(ValueError):
        Intrinsics.from_k([0] * 9, 640, 480)
    for bad in (math.nan, math.inf):  # found by the fuzzer: NaN passed "fx <= 0" and broke the pose
        with pytest.raises(ValueError):
            Intrinsics.from_k([bad, 0, 319.5, 0, 520, 239.5, 0, 0, 1], 640, 480)
        with pytest.raises(ValueError):
            Intrinsics.from_p([525, 0, bad, 0, 0, 520, 239.5, 0, 0, 0, 1, 0], 640, 480)


def test_a_slanted_surface_keeps_its_depth_range():
    # A floor-like surface: depth grows from 1.0 m to 1.3 m across the mask rows; nothing is an
    # outlier, so the centroid sits at the middle depth and the extent spans the slope.
    mask = np.zeros((480, 640), bool)
    mask[200:400, 200:440] = True
    depth = np.full((480, 640), np.nan, np.float32)
    depth[200:400] = np.linspace(1.0, 1.3, 200, dtype=np.float32)[:, None]
    geometry = mask_geometry(mask, depth, K)
    assert geometry.valid_points == 200 * 240
    assert geometry.centroid[2] == pytest.approx(1.15, abs=0.01)
    assert geometry.extent[2] == pytest.approx(0.3, rel=0.05)


def test_the_pose_of_a_tilted_plane_has_its_normal_as_z_towards_the_camera():
    """A plane turned 30 degrees about the optical y axis (z = 1.5 + tan(30 deg) x), 200 x 100 px:
    the pose's z axis is its normal turned towards the camera, its x axis the long side, the
    extent along z is ~0 and along x the plane's length (1st-99th percentile)."""
    import transforms3d.quaternions as quaternions

    slope = math.tan(math.radians(30))
    mask = np.zeros((480, 640), bool)
    mask[190:290, 220:420] = True
    cols = np.arange(640, dtype=np.float64)
    # the ray through column u meets the plane where z = 1.5 + slope * (u - cx) z / fx
    depth = np.tile(1.5 / (1.0 - slope * (cols - K.cx) / K.fx), (480, 1)).astype(np.float32)
    geometry = mask_geometry(mask, depth, K)
    axes = quaternions.quat2mat(geometry.orientation)
    normal = np.array([-slope, 0.0, 1.0]) / math.hypot(slope, 1.0)
    assert float(np.dot(axes[:, 2], -normal)) > math.cos(math.radians(0.5))  # towards the camera, within 0.5 deg
    assert abs(axes[1, 0]) < 1e-3 and axes[0, 0] > 0  # x along the plane's long side (optical x), positive
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-9)
    assert np.linalg.det(axes) == pytest.approx(1.0)
    assert geometry.principal_extent[2] == pytest.approx(0.0, abs=1e-3)
    left, right = (geometry.points[:, 0].min(), geometry.points[:, 2].min()), (geometry.points[:, 0].max(), geometry.points[:, 2].max())
    length = math.hypot(right[0] - left[0], right[1] - left[1])
    assert geometry.principal_extent[0] == pytest.approx(0.98 * length, rel=0.03)
    assert geometry.points.shape == (geometry.valid_points, 3)
