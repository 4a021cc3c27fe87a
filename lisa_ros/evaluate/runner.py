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

MODES = ("teacher-forced", "generate")


def evaluation_question(sample: Sample) -> str:
    text = sample.texts[0]
    if sample.is_sentence:
        return f"{text} Please output segmentation mask."
    return f"What is {text} in this image? Please output segmentation mask."


@torch.no_grad()
def predict(engine: LisaEngine, sample: Sample, rgb: np.ndarray, mode: str) -> np.ndarray:
    """The predicted binary mask of ``sample``'s first instruction."""
    frame = engine.encode_frame(rgb)
    question = evaluation_question(sample)
    if mode == "teacher-forced":
        conversation = Conversation()
        conversation.ask(question)
        ids = engine.tokenizer.encode_with_image(conversation.prompt() + " [SEG].</s>")
        states = engine.teacher_forced_seg_states(frame, ids)
        logits, _ = engine.decode_masks(states[:1], frame)
        return (logits[0] > 0).cpu().numpy()
    if mode == "generate":
        # The question already asks for the mask: no suffix.
        answer, _ = engine.answer(frame, question, options=replace(engine.options, segment_suffix=""))
        if answer.masks:
            return answer.masks[0].mask
        return np.zeros(rgb.shape[:2], bool)
    raise UsageError(f"mode must be one of {MODES}, got {mode!r}")


def evaluate(engine: LisaEngine, samples: list[Sample], mode: str = "teacher-forced",
             out: str | Path | None = None, progress: bool = True) -> dict:
    """gIoU / cIoU over ``samples`` (overall, short and long queries, and per query type
    when the samples have one); writes report.json and
    samples.csv into ``out`` when given."""
    from tqdm import tqdm

    overall, short, long_ = IoUAccumulator(), IoUAccumulator(), IoUAccumulator()
    by_type: dict[str, IoUAccumulator] = {}
    rows = []
    started = time.perf_counter()
    for sample in tqdm(samples, desc=f"evaluating ({mode})", unit="image", disable=not progress):
        rgb = sample.rgb()
        target = sample.target(*rgb.shape[:2])
        prediction = predict(engine, sample, rgb, mode)
        accumulators = [overall, long_ if sample.is_sentence else short]
        if sample.query_type:
            accumulators.append(by_type.setdefault(sample.query_type, IoUAccumulator()))
        for accumulator in accumulators:
            accumulator.add(prediction, target)
        rows.append({"image": sample.image_path.name, "query": sample.texts[0], "query_type": sample.query_type or "",
                     "is_sentence": sample.is_sentence,
                     "intersection": overall.intersections[-1], "union": overall.unions[-1],
                     "iou": round(query_iou(overall.intersections[-1], overall.unions[-1]), 6)})
    report = {"mode": mode, "seconds": round(time.perf_counter() - started, 2), "overall": overall.summary(),
              "short": short.summary(), "long": long_.summary()}
    if by_type:
        report["by_query_type"] = {name: by_type[name].summary() for name in sorted(by_type)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        with (out / "samples.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["image"])
            writer.writeheader()
            writer.writerows(rows)
    return report
