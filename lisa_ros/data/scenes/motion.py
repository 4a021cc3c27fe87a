"""Moving scenes: a reasoning scene played as a camera sequence, with ground truth on every frame.

A sequence starts from one scene of :func:`~lisa_ros.data.scenes.generator.make_scene` (its query
is asked about frame 0) and moves it. Each sequence has one *kind* of motion, the events a robot's
camera meets:

============  ==========================================================================
``move``      the target slides along a smooth path and turns (up to +-35 degrees); the
              other objects drift slowly
``pan``       the camera pans (everything shifts together, up to 12 % of the width each
              way) while the target also moves a little
``occlusion`` an occluder (a plain board in a colour no object has) sweeps across the
              target, hiding it completely for a while
``exit``      the target leaves the view through the nearest side, stays out, and comes
              back along the same path
============  ==========================================================================

Objects are moved as rigid pieces: each object's pixels (colour and texture) are cut from frame 0
with its mask and warped (rotation about its centre, then translation) onto the background, so a
frame's pixels and its masks agree exactly. The background is the scene's own, extended by
reflection so that the camera can pan over it. Depth (metres, a plane behind the objects) and the
camera's translation come with every frame, for 3D and TF.

Ground truth per frame: ``target_masks[i]``, the target's *visible* pixels (in view, not covered
by the occluder; the target is drawn in front of the other objects), and ``target_fractions[i]``, that area over the
target's whole area in frame 0 (1 when fully visible, 0 when out of view or hidden).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from lisa_ros.data.scenes.generator import Scene, make_scene, phrasing_split
from lisa_ros.data.scenes.vocabulary import REASONING_TYPES

MOTION_KINDS: tuple[str, ...] = ("move", "pan", "occlusion", "exit")
OCCLUDER_COLOUR = (96, 112, 128)  # slate grey-blue: not in the palette, not a background tone
BACKGROUND_DEPTH_M = 2.0  # the plane behind the objects
OBJECT_DEPTH_M = 1.6
OCCLUDER_DEPTH_M = 1.1


@dataclass
class MovingSequence:
    """Frames of one moving scene and their ground truth.

    ``frames``: T uint8 (H, W, 3) RGB images; ``target_masks``: T bool (H, W), the target's
    visible pixels; ``target_fractions``: (T,) float, visible area / the target's whole area;
    ``depths``: T float32 (H, W) metres along the optical axis; ``camera_x_m``: (T,) the camera's
    translation to the right (metres, the pan seen as a sideways move at the background's
    distance); ``focal_px``: the pinhole focal length of the frames (principal point at the
    centre); ``fps``: the rate the frames are meant to be played at; ``scene``: the scene of
    frame 0, whose ``query`` names the target.
    """

    kind: str
    scene: Scene
    frames: list[np.ndarray]
    target_masks: list[np.ndarray]
    target_fractions: np.ndarray
    depths: list[np.ndarray]
    camera_x_m: np.ndarray
    focal_px: float
    fps: float
    seed: int = 0
    index: int = 0
    notes: dict = field(default_factory=dict)

    @property
    def query(self) -> str:
        return self.scene.query

    def __len__(self) -> int:
        return len(self.frames)


def _smooth_path(rng: np.random.Generator, count: int, amplitude: float) -> np.ndarray:
    """(count,) a smooth wander starting at 0: two sines of random phase and period 2.5-6 s."""
    t = np.arange(count, dtype=np.float64)
    path = np.zeros(count)
    for _ in range(2):
        period = rng.uniform(40, 90)  # frames (2.7-6 s at 15 Hz)
        phase = rng.uniform(0, 2 * math.pi)
        path += np.sin(2 * math.pi * t / period + phase) - math.sin(phase)
    return amplitude * path / 2


def _pose_matrix(centre: tuple[float, float], angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    """2x3 affine: rotate by ``angle_deg`` about ``centre``, then translate by ``shift``."""
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle_deg), 1.0)
    matrix[:, 2] += shift
    return matrix


def make_moving_sequence(seed: int, index: int, kind: str, split: str = "test", size: tuple[int, int] = (640, 480),
                         seconds: float = 6.0, fps: float = 15.0) -> MovingSequence:
    """Sequence ``index`` of ``kind`` (one of :data:`MOTION_KINDS`) with the phrasings of ``split``.

    Deterministic in (seed, split, index, kind, size, seconds, fps). The scene always has a target
    (no "nothing fits" scenes); its query type cycles through the six reasoning types with ``index``
    (one target each: the sequences' ground truth follows one object).
    Raises ValueError for an unknown kind or split.
    """
    if kind not in MOTION_KINDS:
        raise ValueError(f"unknown motion kind {kind!r} (one of {', '.join(MOTION_KINDS)})")
    phrasing_split(split)
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(f"motion-{split}".encode()), index,
                                                        zlib.crc32(kind.encode())]))
    width, height = int(size[0]), int(size[1])
    scene = make_scene(rng, REASONING_TYPES[index % len(REASONING_TYPES)], (width, height), split)
    count = max(2, int(round(seconds * fps)))
    margin = int(round(0.12 * width)) if kind == "pan" else 0
    world_background = cv2.copyMakeBorder(scene.background, 0, 0, margin, margin, cv2.BORDER_REFLECT)
    target = scene.target_index

    # Per-object pose tracks: angle (degrees) and shift (pixels) per frame.
    angles = np.zeros((len(scene.objects), count))
    shifts = np.zeros((len(scene.objects), count, 2))
    for i in range(len(scene.objects)):
        drift = 0.03 * min(width, height)
        shifts[i, :, 0] = _smooth_path(rng, count, drift)
        shifts[i, :, 1] = _smooth_path(rng, count, drift)
    tx, ty = scene.objects[target].point
    if kind in ("move", "occlusion"):
        room_x = min(tx, width - tx) * 0.55
        room_y = min(ty, height - ty) * 0.55
        shifts[target, :, 0] = _smooth_path(rng, count, max(room_x, 0.08 * width))
        shifts[target, :, 1] = _smooth_path(rng, count, max(room_y, 0.06 * height))
        if kind == "move":
            angles[target] = _smooth_path(rng, count, 35.0)
        # Keep the target's box in view (the exit kind is the one that leaves it).
        x0, y0, w0, h0 = cv2.boundingRect(scene.objects[target].mask.astype(np.uint8))
        shifts[target, :, 0] = np.clip(shifts[target, :, 0], 2 - x0, width - 2 - x0 - w0)
        shifts[target, :, 1] = np.clip(shifts[target, :, 1], 2 - y0, height - 2 - y0 - h0)
    if kind == "pan":
        pan = margin * np.sin(2 * math.pi * np.arange(count) / rng.uniform(50, 80) + rng.uniform(0, 2 * math.pi))
    else:
        pan = np.zeros(count)
    occluder_x = None
    if kind == "exit":
        # Out through the nearest side over ~1 s, away ~1.5 s, back over ~1 s, then still.
        x0, y0, w0, h0 = cv2.boundingRect(scene.objects[target].mask.astype(np.uint8))
        out_left = tx < width / 2
        distance = (x0 + w0 + 4) if out_left else (width - x0 + 4)
        profile = np.interp(np.arange(count) / fps, [0, 0.8, 1.8, 3.3, 4.3, seconds],
                            [0, 0, 1, 1, 0, 0])
        shifts[target, :, 0] = (-distance if out_left else distance) * profile
        shifts[target, :, 1] = 0.0
    if kind == "occlusion":
        # A vertical board, 1.6x the target's width, sweeping right to left past the target.
        x0, _, w0, _ = cv2.boundingRect(scene.objects[target].mask.astype(np.uint8))
        board = int(1.6 * w0) + 8
        occluder_x = np.interp(np.arange(count) / fps, [0, 1.5, 4.5, seconds],
                               [width + 2, width + 2, -board - 2, -board - 2])
        occluder_x = np.stack([occluder_x, np.full(count, board)], axis=1)
        shifts[target] *= 0.4  # a slower target, so it is fully under the board for a while

    frames, target_masks, fractions, depths = [], [], [], []
    whole_area = scene.objects[target].area
    # Every object's mask and the scene's pixels in world coordinates (the view starts at margin).
    lifted = np.zeros((len(scene.objects), height, width + 2 * margin), np.uint8)
    for i, obj in enumerate(scene.objects):
        lifted[i, :, margin:margin + width] = obj.mask
    source = cv2.copyMakeBorder(scene.rgb, 0, 0, margin, margin, cv2.BORDER_CONSTANT).astype(np.float32)
    for f in range(count):
        view_x = margin + pan[f]
        canvas = world_background.astype(np.float32)
        depth = np.full(canvas.shape[:2], BACKGROUND_DEPTH_M, np.float32)
        owner = np.full(canvas.shape[:2], -1, np.int16)
        # The target last, in front of the objects drifting past it (the occluder is the
        # occlusion kind's business).
        order = [i for i in range(len(scene.objects)) if i != target] + [target]
        for i in order:
            obj = scene.objects[i]
            ox, oy = obj.point
            matrix = _pose_matrix((ox + margin, oy), angles[i, f], tuple(shifts[i, f]))
            warped_mask = cv2.warpAffine(lifted[i], matrix, canvas.shape[1::-1], flags=cv2.INTER_NEAREST).astype(bool)
            warped = cv2.warpAffine(source, matrix, canvas.shape[1::-1], flags=cv2.INTER_NEAREST)
            canvas[warped_mask] = warped[warped_mask]
            depth[warped_mask] = OBJECT_DEPTH_M
            owner[warped_mask] = i
        x = int(round(view_x))
        frame = canvas[:, x:x + width]
        depth_view = depth[:, x:x + width].copy()
        visible = owner[:, x:x + width] == target
        if occluder_x is not None:
            left, board = int(round(occluder_x[f, 0])), int(occluder_x[f, 1])
            a, b = max(0, left), min(width, left + board)
            if a < b:
                frame = frame.copy()
                frame[:, a:b] = OCCLUDER_COLOUR
                depth_view[:, a:b] = OCCLUDER_DEPTH_M
                visible[:, a:b] = False
        frames.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
        target_masks.append(visible)
        fractions.append(float(visible.sum()) / max(1, whole_area))
        depths.append(depth_view)
    focal = float(width)  # about a 53 degree horizontal field of view
    camera_x = (pan - pan[0]) * BACKGROUND_DEPTH_M / focal
    return MovingSequence(kind, scene, frames, target_masks, np.asarray(fractions), depths, camera_x, focal, fps,
                          seed, index)
