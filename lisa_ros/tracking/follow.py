"""Reason once, then follow: the loop around a :class:`~lisa_ros.tracking.tracker.Tracker` that
uses the model (ROS-free; the node, the CLI and ``bench/track.py`` drive it).

Two kinds of work, meant for two threads:

* :meth:`Follower.step`, every camera frame (milliseconds, no model): the tracker moves every
  object onto the frame. Frames that arrive while the first answer is being reasoned are kept
  (at most ``catch_up_frames``) and stepped through once it is ready, so the track starts on
  the newest frame and not on the one the answer was about.
* :meth:`Follower.model_pass`, whenever the model is free (hundreds of ms): either a
  *correction* (the newest frame encoded, SAM's decoder prompted with each object's box there,
  :meth:`Tracker.correct`), or, when an object has been lost longer than ``reacquire_after_s``
  and ``reacquire`` is on, a *re-acquisition*: the original command asked again on the newest
  frame (full reasoning), and a mask of the answer continues the lost object's id when its
  colours and size are the lost object's (:meth:`Tracker.matches`); otherwise the object stays
  lost and the reason says what the answer found instead.

The engine is used only inside :meth:`Follower.start` and :meth:`Follower.model_pass`, under
``engine_lock`` (the caller's, shared with whatever else uses the engine); the tracker only under
the follower's own lock, held for milliseconds.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from lisa_ros.engine import Answer, LisaEngine
from lisa_ros.errors import InvalidCommandError
from lisa_ros.tracking.tracker import LOST, TrackedObject, Tracker, TrackerOptions


@dataclass(frozen=True)
class FollowOptions:
    """``reacquire``: ask the command again when an object stays lost; ``reacquire_after_s``: how
    long lost before asking (s); ``min_colour_similarity`` and ``max_size_ratio``: a re-asked
    mask continues the lost object when its colour histogram's Bhattacharyya coefficient with
    the object's reaches the first and its area is within that factor of the object's;
    ``correct``: run SAM corrections when the model is free; ``seg_prompt``: add the answer's
    [SEG] prompt to the box in corrections; ``catch_up_frames``: frames kept while the first
    answer is reasoned."""

    reacquire: bool = True
    reacquire_after_s: float = 0.5
    min_colour_similarity: float = 0.6
    max_size_ratio: float = 2.0
    correct: bool = True
    seg_prompt: bool = False
    catch_up_frames: int = 120
    tracker: TrackerOptions = TrackerOptions()


def keep_thinned(buffer: deque, item, limit: int) -> None:
    """Append ``item`` to ``buffer``; when it holds ``limit`` items already, every other one is
    dropped first, the oldest kept (frames kept for a catch-up: the flow from the answer's frame
    must start close to it, and the span stays covered)."""
    if len(buffer) >= limit:
        thinned = list(buffer)[::2]
        buffer.clear()
        buffer.extend(thinned)
    buffer.append(item)


class NoTargetError(InvalidCommandError):
    """The first answer segmented nothing: there is nothing to follow (the message says why)."""


class Follower:
    """Follows the objects the answer to ``command`` segments (see the module docstring).

    ``engine_lock``: held around every engine call (default: a lock of its own);
    ``should_stop()``: True stops a re-asking's generation at its next token (the node passes
    its deactivation and the goal's cancel)."""

    def __init__(self, engine: LisaEngine, command: str, options: FollowOptions | None = None,
                 engine_lock: threading.Lock | None = None, should_stop=None):
        self.engine = engine
        self.should_stop = should_stop  # ends a re-asking's generation early (deactivation, cancel)
        self.command = command
        self.options = options or FollowOptions()
        self.engine_lock = engine_lock or threading.Lock()
        self.tracker: Tracker | None = None
        self.answer: Answer | None = None
        self._lock = threading.Lock()
        self._pending: deque = deque()
        self.corrections = 0
        self.reacquisitions = 0
        self.reasons: dict[int, str] = {}  # per lost id, what the last re-asking found

    # ------------------------------------------------------------------ the first answer
    def start(self, rgb: np.ndarray, stamp: float) -> Answer:
        """Reason about ``rgb`` (taken at ``stamp`` s) and start following the answer's masks
        (:meth:`begin`). Raises NoTargetError when the answer has no usable mask,
        InvalidCommandError for a command the model refuses."""
        with self.engine_lock:
            encoded = self.engine.encode_frame(rgb)
            answer, _ = self.engine.answer(encoded, self.command)
        self.begin(answer, rgb, stamp, encoded)
        return answer

    def begin(self, answer: Answer, rgb: np.ndarray, stamp: float, encoded=None) -> None:
        """Start following ``answer``'s masks, about ``rgb`` taken at ``stamp`` s; frames given to
        :meth:`step` meanwhile are caught up. ``encoded``: the frame's encoding (an
        :class:`~lisa_ros.engine.EncodedFrame`), when at hand: the first correction is then made
        on it at once (a [SEG] mask is often a rounded blob; the decoder prompted by its box
        gives the object's outline). Raises NoTargetError when the answer has no usable mask."""
        usable = [m for m in answer.masks if m.mask.any()]
        if not usable:
            raise NoTargetError(answer.outcome or "the answer's masks are all empty: nothing to follow")
        states = answer.seg_hidden_states
        seg_states = [None if states is None else states[m.index] for m in usable]
        tracker = Tracker(rgb, [m.mask for m in usable], stamp, ids=[m.index for m in usable],
                          labels=[m.label for m in usable], seg_states=seg_states, options=self.options.tracker)
        if encoded is not None and self.options.correct and getattr(encoded, "image_embedding", None) is not None:
            self._correct(tracker, tracker.snapshot(), rgb, encoded)
        with self._lock:
            self.answer, self.tracker = answer, tracker
            while self._pending:
                pending_rgb, pending_stamp = self._pending.popleft()
                if pending_rgb.shape[:2] == tracker.size:
                    tracker.step(pending_rgb, pending_stamp)

    def keep(self, rgb: np.ndarray, stamp: float) -> None:
        """Keep a frame that came while the first answer is reasoned, for the catch-up. Beyond
        ``catch_up_frames``, every other kept frame is dropped (the oldest stays: the flow from
        the answer's frame must start close to it)."""
        with self._lock:
            keep_thinned(self._pending, (rgb, stamp), self.options.catch_up_frames)

    # ------------------------------------------------------------------ every frame
    def step(self, rgb: np.ndarray, stamp: float) -> list[TrackedObject] | None:
        """Move every object onto ``rgb`` taken at ``stamp`` s; None while the first answer is
        still being reasoned (the frame is kept for the catch-up). Raises ValueError for a frame
        of another size than the first."""
        with self._lock:
            tracker = self.tracker
            if tracker is not None:
                objects = tracker.step(rgb, stamp)
                for found in objects:
                    if found.state != LOST:
                        self.reasons.pop(found.id, None)  # found again: the old reason is history
                    elif found.id in self.reasons:
                        found.reason = f"{found.reason}; {self.reasons[found.id]}"
                return objects
        self.keep(rgb, stamp)
        return None

    # ------------------------------------------------------------------ when the model is free
    def model_pass(self) -> str:
        """One unit of model work on the newest frame; returns what it did: ``"reacquire"``,
        ``"correct"`` or ``""`` (nothing to do)."""
        with self._lock:
            if self.tracker is None:
                return ""
            rgb = self.tracker.rgb  # the frame the snapshot below is about
            overdue = [o for o in self.tracker.objects()
                       if o.state == LOST and o.seconds_in_state >= self.options.reacquire_after_s]
            snapshot = self.tracker.snapshot() if self.options.correct else None
            boxes = self.tracker.correction_boxes(snapshot) if snapshot is not None else {}
        if overdue and self.options.reacquire:
            self._reacquire(rgb, [o.id for o in overdue])
            return "reacquire"
        if not boxes:  # nothing in view to correct: no encoding
            return ""
        with self.engine_lock:
            frame = self.engine.encode_frame(rgb)
        self._correct(self.tracker, snapshot, rgb, frame, boxes)
        return "correct"

    def _correct(self, tracker: Tracker, snapshot, rgb: np.ndarray, frame, boxes: dict | None = None) -> bool:
        """Decode each object's box (``boxes``: :meth:`Tracker.correction_boxes` of the snapshot,
        computed here when None) on ``frame`` (the encoding of ``rgb``, the snapshot's frame) and
        hand the masks to the tracker; whether there was anything to correct."""
        with self._lock:
            if boxes is None:
                boxes = tracker.correction_boxes(snapshot)
            states = {t.id: t.seg_state for t in tracker.tracks}
        if not boxes:
            return False
        ids = list(boxes)
        seg = None
        if self.options.seg_prompt and all(states[i] is not None for i in ids):
            import torch
            seg = torch.stack([states[i] for i in ids])
        with self.engine_lock:
            logits, _, ious = self.engine.segment(frame, seg_hidden_states=seg, boxes=np.array([boxes[i] for i in ids]))
        masks = {i: (logits[n] > 0).cpu().numpy() for n, i in enumerate(ids)}
        with self._lock:
            tracker.correct(snapshot, masks, {i: float(ious[n]) for n, i in enumerate(ids)}, rgb)
        self.corrections += 1
        return True

    def _reacquire(self, rgb: np.ndarray, lost_ids: list[int]) -> None:
        """Ask the command again about ``rgb``; continue each lost id with a mask that looks like it."""
        started = time.monotonic()
        with self.engine_lock:
            answer, _ = self.engine.answer(rgb, self.command, should_stop=self.should_stop)
        masks = [m for m in answer.masks if m.mask.any()]
        with self._lock:
            still_lost = {o.id for o in self.tracker.objects() if o.state == LOST}
            for track_id in lost_ids:
                if track_id not in still_lost:  # found again by its looks meanwhile
                    continue
                best, best_similarity = None, -1.0
                for candidate in masks:
                    similarity, ratio = self.tracker.matches(track_id, rgb, candidate.mask)
                    fits = (similarity >= self.options.min_colour_similarity
                            and 1 / self.options.max_size_ratio <= ratio <= self.options.max_size_ratio)
                    if fits and similarity > best_similarity:
                        best, best_similarity = candidate, similarity
                if best is not None:
                    self.tracker.reacquire(track_id, rgb, best.mask)
                    masks.remove(best)
                    self.reasons.pop(track_id, None)
                    self.reacquisitions += 1
                elif not masks:
                    self.reasons[track_id] = f"asked again ({time.monotonic() - started:.1f} s): {answer.outcome}"
                else:
                    self.reasons[track_id] = (f"asked again ({time.monotonic() - started:.1f} s): the answer's "
                                              f"mask is not the lost object (colours or size differ)")
