"""Probe: does the embedded model's decision token separate "nothing fits" scenes from others?

    python training/probe_decision_token.py runs/scenes/val [--limit 200]

For each scene, the prompt is built as the node builds it (segment suffix included), the answer is
teacher-forced up to the decision token, the first token where a refusal and a target answer to
the same query differ, and the log-probability margin log P(refusal's token) - log P(answer's
token) is read there. With answers that first say what they look for ("I look for something
yellow: there is ..." against "...: it is the ..."), that is the token after the colon; with
answers that decide at once ("Sorry" against "Sure") it is the first answer token. Prints the
margin's quantiles per kind of scene, and the ROC AUC of the margin as a "nothing fits" detector
with the best threshold's false-mask and false-refusal rates: if the AUC is high, a calibrated
threshold can decide refusals without retraining; if it is near 0.5, the model has no idea yet.
One JSON line.
"""
from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch
from tqdm import tqdm

from lisa_ros.data.reasonseg import read_dataset
from lisa_ros.engine import LisaEngine
from lisa_ros.model.loading import load_lisa
from lisa_ros.model.options import LoadOptions


def continuations(samples) -> dict[str, tuple[str, str]]:
    """Per query type, what a refusal and a target answer say after the part they share (what the
    answer looks for, up to ": "; nothing when the answers have no such part)."""
    found: dict[str, dict[bool, str]] = {}
    for sample in samples:
        rest = sample.answer.split(": ", 1)[1] if ": " in sample.answer else sample.answer
        found.setdefault(sample.query_type, {}).setdefault(sample.nothing_fits, rest)
    return {kind: (both[True], both[False]) for kind, both in found.items() if len(both) == 2}


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a random positive's score > a random negative's), ties counting half."""
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + 0.5 * ties)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--model", default="embedded")
    args = parser.parse_args()
    samples = read_dataset("reasonseg", args.data)[: args.limit]
    loaded = load_lisa(args.model, LoadOptions(precision="fp32", device="cpu"))
    engine = LisaEngine(loaded)
    tokenizer = loaded.tokenizer
    rests = continuations(samples)
    samples = [s for s in samples if s.query_type in rests]
    margins = {True: [], False: []}
    rng = random.Random(0)
    for sample in tqdm(samples, desc="probing", unit="scene"):
        frame = engine.encode_frame(sample.rgb(), image_embedding=False)
        command = rng.choice(sample.texts)
        prompt, _ = engine.build_prompt(command, explain=False)
        shared = sample.answer.split(": ", 1)[0] + ": " if ": " in sample.answer else ""
        refusal, target = (tokenizer.encode_with_image(f"{prompt} {shared}{rest}") for rest in rests[sample.query_type])
        decision = next(i for i, (a, b) in enumerate(zip(refusal, target)) if a != b)
        log_probs = torch.log_softmax(engine.next_token_logits(frame, refusal[:decision]), dim=-1)
        margins[sample.nothing_fits].append(float(log_probs[refusal[decision]] - log_probs[target[decision]]))
    empty, ordinary = np.array(margins[True]), np.array(margins[False])
    thresholds = np.unique(np.concatenate([empty, ordinary]))
    best = max(thresholds, key=lambda t: (empty >= t).mean() + (ordinary < t).mean())
    print(json.dumps({
        "scenes": len(samples), "nothing_fits": len(empty), "auc": auc(empty, ordinary),
        "margin_quantiles_nothing_fits": np.quantile(empty, [0.1, 0.5, 0.9]).round(2).tolist(),
        "margin_quantiles_ordinary": np.quantile(ordinary, [0.1, 0.5, 0.9]).round(2).tolist(),
        "best_threshold": round(float(best), 3),
        "false_mask_rate_at_best": round(float((empty < best).mean()), 3),
        "false_refusal_rate_at_best": round(float((ordinary >= best).mean()), 3)}))


if __name__ == "__main__":
    main()
