"""gIoU and cIoU exactly as LISA computes them (docs/MODEL.md §6.2).

Per query (one [SEG] and its ground truth): prediction P and target G are 0/1 maps; G = 255 marks
ignore pixels, which are excluded from every count (the prediction is set to 255 there). Over the
valid pixels, for the foreground: I = #(P=1 and G=1), U = #(P=1) + #(G=1) - I, and the query's IoU
is I / (U + 1e-5), or 1.0 when U = 0 (an empty prediction on an empty target is perfect).
gIoU = mean of the per-query IoUs; cIoU = sum of I / (sum of U + 1e-10).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE = 255


def intersection_union(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """Foreground intersection and union of one query, ignore pixels excluded."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in size")
    valid = target != IGNORE
    predicted = (prediction.astype(bool)) & valid
    # Pixels with other values (e.g. 2 where refCOCO polygons overlap) are not target; a
    # prediction there still counts toward the prediction area, as in the reference code.
    wanted = (target == 1) & valid
    intersection = int(np.count_nonzero(predicted & wanted))
    union = int(np.count_nonzero(predicted)) + int(np.count_nonzero(wanted)) - intersection
    return intersection, union


def query_iou(intersection: int, union: int) -> float:
    return 1.0 if union == 0 else intersection / (union + 1e-5)


@dataclass
class IoUAccumulator:
    """Running gIoU / cIoU over queries."""

    intersections: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=list)

    def add(self, prediction: np.ndarray, target: np.ndarray) -> float:
        intersection, union = intersection_union(prediction, target)
        self.intersections.append(intersection)
        self.unions.append(union)
        return query_iou(intersection, union)

    @property
    def count(self) -> int:
        return len(self.intersections)

    @property
    def giou(self) -> float:
        if not self.intersections:
            return float("nan")
        return float(np.mean([query_iou(i, u) for i, u in zip(self.intersections, self.unions)]))

    @property
    def ciou(self) -> float:
        if not self.intersections:
            return float("nan")
        return float(sum(self.intersections) / (sum(self.unions) + 1e-10))

    @property
    def share_over_half(self) -> float:
        """Share of queries whose IoU exceeds 0.5 (the mask is mostly on the target)."""
        if not self.intersections:
            return float("nan")
        return float(np.mean([query_iou(i, u) > 0.5 for i, u in zip(self.intersections, self.unions)]))

    def summary(self) -> dict:
        return {"queries": self.count, "giou": self.giou, "ciou": self.ciou, "iou_over_0_5": self.share_over_half}


def match_masks(predictions: list[np.ndarray], targets: list[np.ndarray]) -> tuple[list[float], int, int]:
    """Match a several-target answer's masks to the targets, one to one, for the largest total
    IoU; of equal totals the one that matches more pairs wins, then the one that gives the
    earlier targets the earlier masks. A mask that does not overlap its target is no match.
    Exact (a dynamic programme over the sets of masks used, targets in order) up to
    :data:`EXACT_MATCH_MASKS` masks; beyond, pairs are taken greedily by IoU.

    Returns (per-target IoU, 0 for a target no mask is matched to; the number of missing masks,
    targets left without one; the number of extra masks, masks left without a target).
    ``predictions`` and ``targets``: bool (H, W) masks of one image.
    """
    ious = np.array([[query_iou(*intersection_union(p, t.astype(np.uint8))) for t in targets] for p in predictions])
    ious = ious.reshape(len(predictions), len(targets))
    chosen = _exact_match(ious) if len(predictions) <= EXACT_MATCH_MASKS else _greedy_match(ious)
    per_target = [float(ious[p, t]) if p is not None else 0.0 for t, p in enumerate(chosen)]
    matched = sum(p is not None for p in chosen)
    return per_target, len(targets) - matched, len(predictions) - matched


EXACT_MATCH_MASKS = 16  # 2^16 sets of masks x targets: milliseconds


def _exact_match(ious: np.ndarray) -> list[int | None]:
    """Per target the mask matched to it (None: none), for the best (total IoU, pairs)."""
    from functools import lru_cache

    masks, count = ious.shape

    @lru_cache(maxsize=None)
    def best(target: int, used: int) -> tuple[tuple[float, int], tuple]:
        if target == count:
            return (0.0, 0), ()
        (total, pairs), rest = best(target + 1, used)
        found = ((total, pairs), (None, *rest))
        for mask in range(masks):  # earlier masks first: they keep a tie
            if used >> mask & 1 or ious[mask, target] <= 0:
                continue
            (total, pairs), rest = best(target + 1, used | 1 << mask)
            value = (ious[mask, target] + total, pairs + 1)
            if value > found[0] or (value == found[0] and found[1][0] is None):
                found = (value, (mask, *rest))
        return found

    return list(best(0, 0)[1])


def _greedy_match(ious: np.ndarray) -> list[int | None]:
    chosen: list[int | None] = [None] * ious.shape[1]
    used: set[int] = set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        mask, target = divmod(int(flat), ious.shape[1])
        if ious[mask, target] > 0 and mask not in used and chosen[target] is None:
            chosen[target], used = mask, used | {mask}
    return chosen


@dataclass
class SeveralAccumulator:
    """Several-target answers: the mean matched IoU per target, missing and extra masks."""

    target_ious: list[float] = field(default_factory=list)
    queries: int = 0
    missing: int = 0
    extra: int = 0

    def add(self, predictions: list[np.ndarray], targets: list[np.ndarray]) -> list[float]:
        per_target, missing, extra = match_masks(predictions, targets)
        self.target_ious += per_target
        self.queries += 1
        self.missing += missing
        self.extra += extra
        return per_target

    def summary(self) -> dict:
        return {"queries": self.queries, "targets": len(self.target_ious),
                "mean_matched_iou": float(np.mean(self.target_ious)) if self.target_ious else float("nan"),
                "missing_masks": self.missing, "extra_masks": self.extra}
