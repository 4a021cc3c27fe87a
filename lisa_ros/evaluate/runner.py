"""ReasonSeg evaluation runner (spec §6.1): teacher-forced (the official protocol) or generated.

* teacher-forced: each image's first instruction becomes a conversation whose assistant turn is
  the literal ``[SEG].``; one forward pass gives the [SEG] state, its mask is the prediction.
* generate: the model answers freely (greedy, KV cache); the first mask is the prediction, and no
  mask means an empty prediction.

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
from lisa_ros.evaluate.metrics import IoUAccumulator, query_iou
from lisa_ros.model.prompts import Conversation

MODES = ("teacher-forced", "generate", "alignment")
ALIGNMENT_EVAL_TASKS = ("colour", "where", "count", "list")


def evaluation_question(sample: Sample) -> str:
    text = sample.texts[0]
    if sample.is_sentence:
        return f"{text} Please output segmentation mask."
    return f"What is {text} in this image? Please output segmentation mask."


@torch.no_grad()
def predict(engine: LisaEngine, sample: Sample, rgb: np.ndarray, mode: str) -> tuple[np.ndarray, str | None]:
    """The predicted binary mask of ``sample``'s first instruction, and in generate mode the answer
    text (None when teacher-forced). No mask = an empty prediction."""
    frame = engine.encode_frame(rgb)
    question = evaluation_question(sample)
    if mode == "teacher-forced":
        conversation = Conversation()
        conversation.ask(question)
        ids = engine.tokenizer.encode_with_image(conversation.prompt() + " [SEG].</s>")
        states = engine.teacher_forced_seg_states(frame, ids)
        logits, _ = engine.decode_masks(states[:1], frame)
        return (logits[0] > 0).cpu().numpy(), None
    if mode == "generate":
        # The question already asks for the mask: no suffix.
        answer, _ = engine.answer(frame, question, options=replace(engine.options, segment_suffix=""))
        if answer.masks:
            return answer.masks[0].mask, answer.text
        return np.zeros(rgb.shape[:2], bool), answer.text
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

    ``named``: of the samples whose target has a label (the scenes' "red ball"), the share whose
    answer names it; ``false_mask``: of the "nothing fits" samples, the share answered with a
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
        label = sample.target_label
        if label:
            self.labelled += 1
            self.named += int(label.lower() in text.lower())

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
    rows = []
    started = time.perf_counter()
    for sample in tqdm(samples, desc=f"evaluating ({mode})", unit="image", disable=not progress):
        rgb = sample.rgb()
        target = sample.target(*rgb.shape[:2])
        prediction, text = predict(engine, sample, rgb, mode)
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
                     "answer": text if text is not None else ""})
    report = {"mode": mode, "seconds": round(time.perf_counter() - started, 2), "overall": overall.summary(),
              "short": short.summary(), "long": long_.summary()}
    if answers:
        report["overall"].update(answers["overall"].summary())
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
