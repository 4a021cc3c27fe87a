"""ReasonSeg evaluation runner (docs/MODEL.md §6.1): teacher-forced (the official protocol) or generated.

* teacher-forced: each image's first instruction becomes a conversation whose assistant turn is
  the literal ``[SEG].`` (a several-target sample's own answer, one [SEG] per target); one
  forward pass gives the [SEG] states, their masks are the prediction.
* generate: the model answers freely (greedy, KV cache); the first mask is the prediction (the
  union of all masks for a several-target query, whose masks are also matched to the targets one
  to one: per-target IoU, missing and extra masks), and no mask means an empty prediction. A
  follow-up sample's ``history`` goes before its question, as a session's turns do.

Prompts: long sentences "{text} Please output segmentation mask.", short phrases "What is {text}
in this image? Please output segmentation mask." Results are split into the short and long query
subsets, as the paper reports them.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from dataclasses import replace

import numpy as np
import torch

from lisa_ros.data.reasonseg import Sample
from lisa_ros.engine import LisaEngine
from lisa_ros.errors import UsageError
from lisa_ros.evaluate.metrics import IoUAccumulator, SeveralAccumulator, query_iou
from lisa_ros.model.prompts import Conversation, with_suffix

MODES = ("teacher-forced", "generate", "alignment")
ALIGNMENT_EVAL_TASKS = ("colour", "where", "count", "list")


def evaluation_question(sample: Sample) -> str:
    """Long sentences as the engine sends them ("{text} Please output segmentation mask.", no
    suffix when the text already asks for a segmentation); short phrases "What is {text} in this
    image? Please output segmentation mask."."""
    text = sample.texts[0]
    if sample.is_sentence:
        return with_suffix(text, explain=False)
    return f"What is {text} in this image? Please output segmentation mask."


@torch.no_grad()
def predict(engine: LisaEngine, sample: Sample, rgb: np.ndarray, mode: str) -> tuple[np.ndarray, str | None, list[np.ndarray]]:
    """The predicted binary mask of ``sample``'s first instruction (after its ``history``, a
    follow-up's earlier turns), in generate mode the answer text (None when teacher-forced), and
    every mask of the answer. The prediction is the first mask, or for a several-target sample
    the union of all; no mask = an empty prediction."""
    frame = engine.encode_frame(rgb)
    question = evaluation_question(sample)
    history = Conversation([tuple(turn) for turn in sample.history or []])
    several = sample.several_targets
    if mode == "teacher-forced":
        # the official "[SEG]."; a several-target sample's own answer, one [SEG] per target
        forced = sample.answer if several and sample.answer else "[SEG]."
        conversation = Conversation(list(history.turns))
        conversation.ask(question)
        ids = engine.tokenizer.encode_with_image(conversation.prompt() + f" {forced}</s>")
        states = engine.teacher_forced_seg_states(frame, ids)
        logits, _ = engine.decode_masks(states[len(states) - forced.count("[SEG]"):], frame)  # not the history's
        masks = [mask for mask in (logits > 0).cpu().numpy()]
        return (np.logical_or.reduce(masks) if several else masks[0]), None, masks
    if mode == "generate":
        # The question already asks for the mask: no suffix.
        answer, _ = engine.answer(frame, question, history=history if history.turns else None,
                                  options=replace(engine.options, segment_suffix=""))
        masks = [decoded.mask for decoded in answer.masks]
        if not masks:
            return np.zeros(rgb.shape[:2], bool), answer.text, masks
        return (np.logical_or.reduce(masks) if several else masks[0]), answer.text, masks
    raise UsageError(f"mode must be one of {MODES}, got {mode!r}")


@torch.no_grad()
def evaluate_alignment(engine: LisaEngine, samples: list[Sample], out: str | Path | None = None,
                       progress: bool = True, seed: int = 0) -> dict:
    """Stage-1 check: ask each scene the alignment questions (:mod:`lisa_ros.data.scenes.questions`:
    the colour of an object, where one is, how many of a colour, the list of objects) and report
    per task the share of answers that are exactly right (case and spacing aside)."""
    import random

    from tqdm import tqdm

    from lisa_ros.data.scenes.questions import alignment_example

    rng = random.Random(seed)
    right: dict[str, list[bool]] = {task: [] for task in ALIGNMENT_EVAL_TASKS}
    rows = []
    started = time.perf_counter()
    for sample in tqdm(samples, desc="evaluating (alignment)", unit="image", disable=not progress):
        frame = None
        for task in ALIGNMENT_EVAL_TASKS:
            example = alignment_example(sample, rng, task)
            if example is None or example[0] != task:
                continue
            frame = frame or engine.encode_frame(sample.rgb(), image_embedding=False)
            _, question, expected = example
            answer, _ = engine.answer(frame, question, options=replace(engine.options, segment_suffix=""))
            correct = " ".join(answer.text.lower().split()) == " ".join(expected.lower().split())
            right[task].append(correct)
            rows.append({"image": sample.image_path.name, "task": task, "question": question, "expected": expected,
                         "answer": answer.text, "correct": correct})
    report = {"mode": "alignment", "seconds": round(time.perf_counter() - started, 2),
              "accuracy": {task: (round(float(np.mean(v)), 4) if v else None) for task, v in right.items()},
              "questions": {task: len(v) for task, v in right.items()}}
    if out is not None:
        write_report(out, report, rows)
    return report


class AnswerCounts:
    """What the generated answers say, per group of samples (generate mode only).

    ``named``: of the samples whose targets have labels (the scenes' "red ball"), the share whose
    answer names every one; ``false_mask``: of the "nothing fits" samples, the share answered with a
    mask anyway; ``refused``: of the samples with a target, the share answered without a mask.
    """

    def __init__(self):
        self.named, self.labelled, self.false_masks, self.empty_targets, self.refusals, self.targets = 0, 0, 0, 0, 0, 0

    def add(self, sample: Sample, text: str, has_mask: bool) -> None:
        if sample.nothing_fits:
            self.empty_targets += 1
            self.false_masks += int(has_mask)
            return
        self.targets += 1
        self.refusals += int(not has_mask)
        labels = sample.target_labels
        if labels:
            self.labelled += 1
            self.named += int(all(label.lower() in text.lower() for label in labels))

    def summary(self) -> dict:
        def share(part: int, whole: int):
            return round(part / whole, 4) if whole else None

        return {"named_target": share(self.named, self.labelled), "false_mask_rate": share(self.false_masks, self.empty_targets),
                "refusal_rate": share(self.refusals, self.targets), "nothing_fits_queries": self.empty_targets}


def evaluate(engine: LisaEngine, samples: list[Sample], mode: str = "teacher-forced",
             out: str | Path | None = None, progress: bool = True) -> dict:
    """gIoU / cIoU and the share of masks with IoU > 0.5 over ``samples`` (overall, short and long
    queries, and per query type when the samples have one); in generate mode also what the
    answers say (:class:`AnswerCounts`); in alignment mode :func:`evaluate_alignment`. Writes
    report.json and samples.csv into ``out`` when given."""
    from tqdm import tqdm

    if mode == "alignment":
        return evaluate_alignment(engine, samples, out, progress)

    overall, short, long_ = IoUAccumulator(), IoUAccumulator(), IoUAccumulator()
    by_type: dict[str, IoUAccumulator] = {}
    answers: dict[str, AnswerCounts] = {}
    several: dict[str, SeveralAccumulator] = {}
    rows = []
    started = time.perf_counter()
    for sample in tqdm(samples, desc=f"evaluating ({mode})", unit="image", disable=not progress):
        rgb = sample.rgb()
        target = sample.target(*rgb.shape[:2])
        prediction, text, masks = predict(engine, sample, rgb, mode)
        matched = ""
        if sample.several_targets:  # masks matched to the targets one to one
            targets = sample.target_masks(*rgb.shape[:2])
            for group in ("overall", sample.query_type or "overall"):
                per_target = several.setdefault(group, SeveralAccumulator()).add(masks, targets)
            matched = " ".join(f"{value:.3f}" for value in per_target)
        accumulators = [overall, long_ if sample.is_sentence else short]
        if sample.query_type:
            accumulators.append(by_type.setdefault(sample.query_type, IoUAccumulator()))
        for accumulator in accumulators:
            accumulator.add(prediction, target)
        if text is not None:
            for group in ("overall", sample.query_type or "overall"):
                answers.setdefault(group, AnswerCounts()).add(sample, text, bool(prediction.any()))
        rows.append({"image": sample.image_path.name, "query": sample.texts[0], "query_type": sample.query_type or "",
                     "is_sentence": sample.is_sentence, "nothing_fits": sample.nothing_fits,
                     "intersection": overall.intersections[-1], "union": overall.unions[-1],
                     "iou": round(query_iou(overall.intersections[-1], overall.unions[-1]), 6),
                     "answer": text if text is not None else "", "masks": len(masks), "matched_ious": matched})
    report = {"mode": mode, "seconds": round(time.perf_counter() - started, 2), "overall": overall.summary(),
              "short": short.summary(), "long": long_.summary()}
    if answers:
        report["overall"].update(answers["overall"].summary())
    if several:
        report["several_targets"] = {group: acc.summary() for group, acc in sorted(several.items())}
    if by_type:
        report["by_query_type"] = {name: {**by_type[name].summary(), **(answers[name].summary() if name in answers else {})}
                                   for name in sorted(by_type)}
    if out is not None:
        write_report(out, report, rows)
    return report


def json_ready(value):
    """``value`` with every NaN or infinite float replaced by None (JSON ``null``): a metric with
    nothing to measure (no query of a type, no target pixels) is NaN, which JSON cannot hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def write_report(out: str | Path, report: dict, rows: list[dict]) -> None:
    """``out``/report.json (``report``, strict JSON: NaN as null) and ``out``/samples.csv (one row
    per sample)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(json_ready(report), indent=2, allow_nan=False))
    with (out / "samples.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["image"])
        writer.writeheader()
        writer.writerows(rows)
