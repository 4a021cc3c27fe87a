"""Rigid transforms between coordinate frames over time: a small TF buffer. ROS-free.

The node prefers tf2_ros (a sourced ROS 2); without it (the pip install: tf2 is not on PyPI) the
ROS layer (:mod:`lisa_ros.ros.tf`) feeds :class:`TransformBuffer` from ``/tf`` and ``/tf_static``.
The semantics follow tf2's: frames form a tree (each child has one parent); a transform stamped
``t`` from ``parent`` to ``child`` maps points given in ``child`` into ``parent``
(``p_parent = R p_child + t``, REP 105 / geometry_msgs/TransformStamped); a lookup at time ``t``
interpolates every moving edge between its two samples around ``t`` (linear in translation,
spherical in rotation) and refuses to extrapolate; static edges hold at every time; time 0 means
"the latest": the newest time every moving edge of the lookup has; a sample more than
:data:`JUMP_BACK_S` older than an edge's newest means time jumped back (a looped bag, a reset
simulator) and clears that edge, however long the history kept. The maths (quaternions, matrices) is transforms3d's.

Quaternions here are ``(w, x, y, z)`` (transforms3d's order); geometry_msgs's are ``x, y, z, w``.
Times are seconds (float) in the clock of the stamps (sim time under use_sim_time).
"""
from __future__ import annotations

import bisect
import math
from array import array
import threading
import time
from dataclasses import dataclass

import numpy as np
import transforms3d.quaternions as quaternions

# Moving-edge samples older than this behind an edge's newest are dropped (tf2's default cache).
DEFAULT_CACHE_TIME_S = 10.0
# A sample this much older than its edge's newest is not a late message but time jumping back.
JUMP_BACK_S = 10.0


class TransformError(LookupError):
    """A transform that cannot be looked up: unknown frame, frames not connected, or a time
    outside the buffered samples (the message says which)."""


@dataclass(frozen=True)
class Transform:
    """A rigid transform: ``apply(p) = R(rotation) p + translation``.

    ``translation``: ``(3,)`` metres; ``rotation``: ``(4,)`` unit quaternion ``(w, x, y, z)``."""

    translation: np.ndarray
    rotation: np.ndarray

    @classmethod
    def identity(cls) -> "Transform":
        return cls(np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]))

    @classmethod
    def from_parts(cls, translation, rotation_wxyz) -> "Transform":
        """Checked constructor: finite values, a non-zero quaternion (normalised here).
        Raises ValueError otherwise."""
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        q = np.asarray(rotation_wxyz, dtype=np.float64).reshape(4)
        norm = float(np.linalg.norm(q))
        if not (np.isfinite(t).all() and np.isfinite(q).all()) or norm < 1e-9:
            raise ValueError("a transform needs a finite translation and a non-zero finite quaternion")
        return cls(t, q / norm)

    @property
    def matrix(self) -> np.ndarray:
        """``(3, 3)`` rotation matrix."""
        return quaternions.quat2mat(self.rotation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` (or ``(3,)``) points in the source frame -> the same in the target frame."""
        return np.asarray(points, dtype=np.float64) @ self.matrix.T + self.translation

    def rotate(self, rotation_wxyz: np.ndarray) -> np.ndarray:
        """An orientation ``(w, x, y, z)`` in the source frame -> in the target frame."""
        return quaternions.qmult(self.rotation, rotation_wxyz)

    def __mul__(self, other: "Transform") -> "Transform":
        """``self * other``: first ``other``, then ``self`` (``A_from_C = A_from_B * B_from_C``)."""
        return Transform(self.matrix @ other.translation + self.translation,
                         _positive(quaternions.qmult(self.rotation, other.rotation)))

    def inverse(self) -> "Transform":
        inverse_rotation = quaternions.qinverse(self.rotation)
        return Transform(-(quaternions.quat2mat(inverse_rotation) @ self.translation), inverse_rotation)


def _positive(q: np.ndarray) -> np.ndarray:
    """The same rotation with w >= 0 (q and -q are one rotation)."""
    return -q if q[0] < 0 else q


def slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions (the shorter arc)."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear, then normalised
        q = q0 + fraction * (q1 - q0)
        return q / np.linalg.norm(q)
    angle = math.acos(dot)
    return (math.sin((1 - fraction) * angle) * q0 + math.sin(fraction * angle) * q1) / math.sin(angle)


def interpolate(a: Transform, b: Transform, fraction: float) -> Transform:
    """The transform ``fraction`` (0..1) of the way from ``a`` to ``b``."""
    return Transform(a.translation + fraction * (b.translation - a.translation),
                     slerp(a.rotation, b.rotation, fraction))


class _MovingEdge:
    """The samples of one child frame's transform to its parent, sorted by time.

    Stored flat (``array('d')``: 8 bytes per stamp, 56 per transform) rather than as Transform
    objects (about 300 bytes each), so that minutes of history stay small: a 20-edge tree at
    100 Hz over 310 s is about 40 MB instead of about 190 MB. Old samples are dropped in batches
    (once they are a quarter of the edge), not one per insert, so that keeping minutes does not
    move the whole history at every message; until then lookups may reach a little further back.
    """

    _WIDTH = 7  # translation (3) then rotation (w, x, y, z) per sample

    def __init__(self, parent: str):
        self.parent = parent
        self.stamps = array("d")
        self._values = array("d")

    def _transform(self, index: int) -> Transform:
        row = self._values[self._WIDTH * index:self._WIDTH * (index + 1)]
        return Transform(np.array(row[:3]), np.array(row[3:]))

    def insert(self, stamp: float, transform: Transform, cache_time_s: float) -> None:
        if self.stamps and stamp < self.stamps[-1] - JUMP_BACK_S:
            # Time jumped back (a bag looped, a simulator reset): the old samples describe another
            # run, and keeping them would make every new sample "too old". tf2 clears too.
            del self.stamps[:], self._values[:]
        row = array("d", (*transform.translation, *transform.rotation))
        index = bisect.bisect_left(self.stamps, stamp)
        at = slice(self._WIDTH * index, self._WIDTH * (index + 1))
        if index < len(self.stamps) and self.stamps[index] == stamp:
            self._values[at] = row
        else:
            self.stamps.insert(index, stamp)
            self._values[at.start:at.start] = row
        keep_from = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_time_s)
        if keep_from and keep_from * 4 >= len(self.stamps):
            del self.stamps[:keep_from], self._values[:self._WIDTH * keep_from]

    def at(self, stamp: float, child: str) -> Transform:
        first, last = self.stamps[0], self.stamps[-1]
        if stamp < first or stamp > last:
            raise TransformError(f"{self.parent} -> {child}: no transform at {stamp:.3f} s (would extrapolate into "
                                 f"the {'past' if stamp < first else 'future'}; buffered {first:.3f}-{last:.3f} s)")
        index = bisect.bisect_left(self.stamps, stamp)
        if self.stamps[index] == stamp:
            return self._transform(index)
        t0, t1 = self.stamps[index - 1], self.stamps[index]
        return interpolate(self._transform(index - 1), self._transform(index), (stamp - t0) / (t1 - t0))


class TransformBuffer:
    """Buffered transforms of a frame tree (see the module docstring). Thread-safe: fed by
    subscription callbacks, read by request workers (:meth:`wait_for_transform` waits for data).
    """

    def __init__(self, cache_time_s: float = DEFAULT_CACHE_TIME_S):
        self.cache_time_s = cache_time_s
        self._static: dict[str, tuple[str, Transform]] = {}
        self._moving: dict[str, _MovingEdge] = {}
        self._changed = threading.Condition()

    def set_transform(self, parent: str, child: str, stamp: float, transform: Transform, static: bool = False) -> None:
        """Add the transform from ``parent`` to ``child`` at ``stamp`` seconds (a static one holds
        at every time and replaces the previous one). Raises ValueError for empty or equal frame
        names; a child re-parented by a newer message moves to its new parent."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"invalid transform {parent!r} -> {child!r}: frames must be non-empty and differ")
        with self._changed:
            if static:
                self._static[child] = (parent, transform)
                self._moving.pop(child, None)
            else:
                edge = self._moving.get(child)
                if edge is None or edge.parent != parent:
                    edge = self._moving[child] = _MovingEdge(parent)
                edge.insert(stamp, transform, self.cache_time_s)
                self._static.pop(child, None)
            self._changed.notify_all()

    def frames(self) -> set[str]:
        with self._changed:
            names = set(self._static) | set(self._moving)
            names |= {p for p, _ in self._static.values()} | {e.parent for e in self._moving.values()}
        return names

    def _parent_name(self, child: str) -> str | None:
        if child in self._static:
            return self._static[child][0]
        edge = self._moving.get(child)
        return None if edge is None else edge.parent

    def _ancestors(self, frame: str) -> list[str]:
        """``frame`` and its ancestors up to its root, nearest first (names only: no time)."""
        chain = [frame]
        while (parent := self._parent_name(chain[-1])) is not None:
            if parent in chain:
                raise TransformError(f"the frame tree has a loop through {parent!r}")
            chain.append(parent)
        return chain

    def _up_to(self, chain: list[str], stamp: float) -> Transform:
        """``chain[-1]_from_chain[0]`` at ``stamp``: the edges of an ancestor chain composed."""
        accumulated = Transform.identity()
        for child in chain[:-1]:
            if child in self._static:
                parent_from_child = self._static[child][1]
            else:
                parent_from_child = self._moving[child].at(stamp, child)
            accumulated = parent_from_child * accumulated
        return accumulated

    def lookup_transform(self, target_frame: str, source_frame: str, stamp: float) -> Transform:
        """``target_from_source`` at ``stamp`` seconds (0 = latest): maps points in
        ``source_frame`` into ``target_frame``. Only the edges up to the two frames' nearest
        common ancestor are used (as tf2 does). Raises TransformError (unknown frame, frames not
        connected, extrapolation)."""
        target_frame, source_frame = target_frame.lstrip("/"), source_frame.lstrip("/")
        if target_frame == source_frame:
            return Transform.identity()
        with self._changed:
            known = self.frames()
            for name in (target_frame, source_frame):
                if name not in known:
                    raise TransformError(f"frame {name!r} does not exist (no transform names it)")
            source_chain, target_chain = self._ancestors(source_frame), self._ancestors(target_frame)
            common = next((frame for frame in target_chain if frame in source_chain), None)
            if common is None:
                raise TransformError(f"{target_frame!r} and {source_frame!r} are not connected (two unconnected trees)")
            source_chain = source_chain[:source_chain.index(common) + 1]
            target_chain = target_chain[:target_chain.index(common) + 1]
            if stamp == 0.0:  # the latest time every moving edge of both chains has (tf2's rule)
                newest = [self._moving[f].stamps[-1] for f in source_chain[:-1] + target_chain[:-1] if f in self._moving]
                stamp = min(newest) if newest else 0.0
            common_from_source = self._up_to(source_chain, stamp)
            common_from_target = self._up_to(target_chain, stamp)
            return common_from_target.inverse() * common_from_source

    def wait_for_transform(self, target_frame: str, source_frame: str, stamp: float, timeout_s: float) -> Transform:
        """:meth:`lookup_transform`, retried as transforms arrive for up to ``timeout_s`` seconds
        (wall clock); raises the last TransformError when the time is up."""
        give_up = time.monotonic() + max(0.0, timeout_s)
        with self._changed:
            while True:
                try:
                    return self.lookup_transform(target_frame, source_frame, stamp)
                except TransformError:
                    left = give_up - time.monotonic()
                    if left <= 0:
                        raise
                    self._changed.wait(left)
