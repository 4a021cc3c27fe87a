"""Probe: does the embedded model's first answer token separate "nothing fits" scenes from others?

    python training/probe_first_token.py runs/scenes/val [--limit 200]

For each scene, the prompt is built as the node builds it (segment suffix included), prefilled once,
and the log-probability margin log P(refusal's first token) - log P(answer's first token) is read
at the first answer position ("Sorry" against "Sure" for the generated scenes). Prints, per kind of
scene, the margin's quantiles, and the ROC AUC of the margin as a "nothing fits" detector with the
best threshold's false-mask and false-refusal rates: if the AUC is high, a calibrated threshold can
decide refusals without retraining; if it is near 0.5, the model has no idea yet. One JSON line.
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
from lisa_ros.train.prompts import training_tokens


def first_answer_token(tokenizer, question: str, answer: str) -> int:
    ids, labels = training_tokens(tokenizer, question, answer)
    return next(label for label in labels if label >= 0)


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
    refusal = next(s.answer for s in samples if s.nothing_fits)
    sorry = first_answer_token(tokenizer, "x", refusal)
    sure = first_answer_token(tokenizer, "x", "Sure, it is [SEG].")
    margins = {True: [], False: []}
    rng = random.Random(0)
    for sample in tqdm(samples, desc="probing", unit="scene"):
        frame = engine.encode_frame(sample.rgb(), image_embedding=False)
        command = rng.choice(sample.texts)
        prompt, _ = engine.build_prompt(command, explain=False)
        ids = tokenizer.encode_with_image(prompt)
        hidden = engine.model.model(inputs_embeds=engine._inputs_embeds(ids, frame), use_cache=False).last_hidden_state
        log_probs = torch.log_softmax(engine.model.lm_head(hidden[:, -1]).float(), dim=-1)[0]
        margins[sample.nothing_fits].append(float(log_probs[sorry] - log_probs[sure]))
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
