"""The score of a replay (``lisa-ros replay --annotations``): each answered frame's masks against
its annotation (:mod:`.annotations`), matched by header stamp. ROS-free.

Per annotated frame the answer's masks (their union) and the targets (their union) give the
intersection and union that LISA's metrics use (:mod:`.metrics`): gIoU is the mean IoU over the
annotated frames that were answered, cIoU the summed intersection over the summed union. A frame
with several targets also gets each target matched to one mask (:func:`.metrics.match_masks`;
missing and extra masks counted). An annotated frame the replay refused (its reason kept), did
not ask, or that is not in the bag is listed, not scored: it says what the figures leave out.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lisa_ros.errors import DataError
from lisa_ros.evaluate.annotations import NS_PER_S, FrameAnnotation
from lisa_ros.evaluate.metrics import IoUAccumulator, SeveralAccumulator, intersection_union, query_iou

STAMP_SLOP_NS = 1_000_000  # an annotation is for the frame whose stamp is within 1 ms of its own


@dataclass
class FrameScore:
    """One annotated frame: ``status`` answered / refused / not asked / not in the bag; for an
    answered one its ``iou`` (union of masks vs union of targets), the counts behind it, its
    masks and targets and each target's matched IoU (several targets)."""

    stamp_ns: int
    source: str
    status: str = "not in the bag"
    reason: str = ""
    iou: float | None = None
    intersection: int = 0
    union: int = 0
    masks: int = 0
    targets: int = 0
    matched_ious: list[float] = field(default_factory=list)  # per target, 0 where no mask matched
    missing: int = 0
    extra: int = 0


class RecordedScore:
    """Collects a replay's answers on annotated frames. ``annotations``: by stamp (ns), from
    :func:`.annotations.read_annotations`."""

    def __init__(self, annotations: dict[int, FrameAnnotation], slop_ns: int = STAMP_SLOP_NS):
        self.annotations = annotations
        self.slop_ns = slop_ns
        self._stamps = np.array(sorted(annotations), dtype=np.int64)
        self.frames = {stamp: FrameScore(stamp, annotations[stamp].source, targets=len(annotations[stamp].targets))
                       for stamp in self._stamps.tolist()}

    @property
    def stamps_ns(self) -> list[int]:
        return self._stamps.tolist()

    def annotated_stamp(self, stamp_ns: int) -> int | None:
        """The annotation stamp within ``slop_ns`` of a frame's ``stamp_ns`` (nearest), or None."""
        at = int(np.searchsorted(self._stamps, stamp_ns))
        near = [int(s) for s in self._stamps[max(0, at - 1):at + 1] if abs(int(s) - stamp_ns) <= self.slop_ns]
        return min(near, key=lambda s: abs(s - stamp_ns)) if near else None

    def seen(self, stamp_ns: int) -> None:
        """A colour frame of the bag (answered or not): its annotation, if any, is in the bag."""
        stamp = self.annotated_stamp(stamp_ns)
        if stamp is not None and self.frames[stamp].status == "not in the bag":
            self.frames[stamp].status = "not asked"

    def answered(self, stamp_ns: int, masks: list[np.ndarray]) -> None:
        """The answer's masks (``(H, W)`` bool each, the frame's size) for the frame ``stamp_ns``;
        ignored when the frame is not annotated. Raises DataError when the annotation's size is not
        the frame's."""
        stamp = self.annotated_stamp(stamp_ns)
        if stamp is None:
            return
        annotation, score = self.annotations[stamp], self.frames[stamp]
        masks = [mask for mask in masks if mask.any()]  # an empty mask is no mask (no false mask, no extra)
        size = masks[0].shape if masks else None
        if size is not None and tuple(size) != tuple(annotation.size):
            raise DataError(f"annotation {annotation.source} is {annotation.size[1]}x{annotation.size[0]}, "
                            f"the frame {size[1]}x{size[0]}")
        predicted = np.zeros(annotation.size, bool)
        for mask in masks:
            predicted |= mask
        score.status, score.masks = "answered", len(masks)
        score.intersection, score.union = intersection_union(predicted, annotation.union.astype(np.uint8))
        score.iou = query_iou(score.intersection, score.union)
        if len(annotation.targets) > 1:
            several = SeveralAccumulator()
            score.matched_ious = several.add(list(masks), annotation.targets)
            score.missing, score.extra = several.missing, several.extra

    def refused(self, stamp_ns: int, reason: str) -> None:
        stamp = self.annotated_stamp(stamp_ns)
        if stamp is not None:
            self.frames[stamp].status, self.frames[stamp].reason = "refused", reason

    def check_found(self, first_ns: int | None, last_ns: int | None) -> None:
        """Raise DataError when no annotation is for a frame of the bag (wrong bag, or stamps
        written in another clock); ``first_ns``/``last_ns``: the bag's colour stamps, for the message."""
        if all(frame.status == "not in the bag" for frame in self.frames.values()):
            self._none_found(first_ns, last_ns)

    def check_stamps(self, stamps_ns: list[int]) -> None:
        """:meth:`check_found` before a replay, from the bag's colour stamps
        (:func:`lisa_ros.ros.bags.header_stamps_ns`): a wrong pairing fails before any model work."""
        if not any(self.annotated_stamp(stamp) is not None for stamp in stamps_ns):
            self._none_found(min(stamps_ns, default=None), max(stamps_ns, default=None))

    def _none_found(self, first_ns: int | None, last_ns: int | None) -> None:
        span = (f"its colour frames are stamped {first_ns / NS_PER_S:.3f} to {last_ns / NS_PER_S:.3f} s"
                if first_ns is not None else "it has no colour frame in the window")
        first, last = self._stamps[0] / NS_PER_S, self._stamps[-1] / NS_PER_S
        stamps = f"stamp {first:.3f} s" if len(self.frames) == 1 else f"stamps {first:.3f} to {last:.3f} s"
        raise DataError(f"none of the {len(self.frames)} annotations ({stamps}) is for a frame of the bag: {span}")

    def report(self) -> dict:
        """Overall figures and one row per annotated frame (JSON-ready)."""
        frames = [self.frames[s] for s in self.stamps_ns]
        scored = [f for f in frames if f.status == "answered"]
        accumulator = IoUAccumulator([f.intersection for f in scored], [f.union for f in scored])
        several = [f for f in frames if f.status == "answered" and f.targets > 1]
        overall = {"annotated_frames": len(frames), "answered": len(scored),
                   "refused": sum(f.status == "refused" for f in frames),
                   "not_asked": sum(f.status == "not asked" for f in frames),
                   "not_in_bag": sum(f.status == "not in the bag" for f in frames),
                   **({k: v for k, v in accumulator.summary().items() if k != "queries"} if scored else
                      {"giou": None, "ciou": None, "iou_over_0_5": None}),
                   "target_absent_frames": sum(f.targets == 0 for f in scored),
                   "false_masks": sum(f.targets == 0 and f.masks > 0 for f in scored)}
        if several:
            overall["several_targets"] = {
                "frames": len(several), "targets": sum(f.targets for f in several),
                "mean_matched_iou": float(np.mean([iou for f in several for iou in f.matched_ious])),
                "missing_masks": sum(f.missing for f in several), "extra_masks": sum(f.extra for f in several)}
        return {"overall": overall, "frames": [asdict(f) for f in frames]}

    def text(self) -> str:
        """A short table for the terminal."""
        overall = self.report()["overall"]
        lines = [f"annotated frames: {overall['annotated_frames']} ({overall['answered']} answered, "
                 f"{overall['refused']} refused, {overall['not_asked']} not asked, {overall['not_in_bag']} not in the bag)"]
        if overall["answered"]:
            lines.append(f"gIoU {overall['giou']:.3f}  cIoU {overall['ciou']:.3f}  IoU > 0.5: "
                         f"{overall['iou_over_0_5']:.0%}  false masks (target absent): {overall['false_masks']} of "
                         f"{overall['target_absent_frames']}")
        if "several_targets" in overall:
            several = overall["several_targets"]
            lines.append(f"several targets: {several['frames']} frames, mean matched IoU "
                         f"{several['mean_matched_iou']:.3f}, {several['missing_masks']} missing, "
                         f"{several['extra_masks']} extra masks")
        return "\n".join(lines)

    def write(self, folder: str | Path) -> Path:
        """``score.json`` (:meth:`report`), ``frames.csv`` (one row per annotated frame) and
        ``iou.png`` (IoU over the frames' stamps) in ``folder`` (created); returns it."""
        from lisa_ros.visualization import draw_series

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        report = self.report()
        (folder / "score.json").write_text(json.dumps(report, indent=2) + "\n")
        with open(folder / "frames.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["stamp", "source", "status", "iou", "masks", "targets", "reason"])
            for frame in report["frames"]:
                stamp = frame["stamp_ns"]
                writer.writerow([f"{stamp // NS_PER_S}.{stamp % NS_PER_S:09d}", frame["source"], frame["status"],
                                 "" if frame["iou"] is None else f"{frame['iou']:.4f}", frame["masks"],
                                 frame["targets"], frame["reason"]])
        scored = [f for f in report["frames"] if f["iou"] is not None]
        if scored:
            first = report["frames"][0]["stamp_ns"]
            overall = report["overall"]
            image = draw_series([(f["stamp_ns"] - first) / NS_PER_S for f in scored], [f["iou"] for f in scored],
                                title=f"IoU per annotated frame: gIoU {overall['giou']:.3f}, cIoU {overall['ciou']:.3f}",
                                x_label="seconds from the first annotated frame")
            import cv2

            cv2.imwrite(str(folder / "iou.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return folder
