#!/usr/bin/env python3
"""Training throughput: one padded batch against one forward per conversation, in one run.

The same model, the same conversations and the same loss (cross-entropy plus the point loss, as
the embedded model's language stage trains): ``Trainer.batch_loss`` on the whole micro-batch
against ``batch_loss`` on each conversation alone, forward and backward, after a warm-up step.
Also a profile of where a batched step's time goes (forward, backward, optimizer).

    python bench/training.py                              # the untrained embedded base, scenes made here
    python bench/training.py --model embedded-base --batch 8 --repeats 3

Prints samples per second for both and the speed-up; ``--json`` writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lisa_ros.data.scenes import write_split
from lisa_ros.train.config import TrainConfig
from lisa_ros.train.conversations import training_tokens
from lisa_ros.train.trainer import Trainer


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded-base", help="checkpoint to train (default: the untrained embedded base)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        scenes = write_split(Path(tmp) / "scenes", "train", args.batch, seed=0)
        config = TrainConfig(
            model=args.model, data=[{"type": "reasonseg", "path": str(scenes)}], output_dir=str(Path(tmp) / "run"),
            precision="fp32", gradient_checkpointing=False, batch_size=args.batch, grad_accumulation=1, steps=10,
            lora_target=r"model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)", lora_r=16, lora_alpha=32,
            lora_dropout=0.0, trainable=["mm_projector", "text_hidden_fcs", "embed_tokens", "lm_head"],
            embedding_rows="added", loss_weights={"ce": 1.0, "bce": 0.0, "dice": 0.0, "point": 2.0},
            explanatory=0.0, alignment=0.0, export=False, resume=False)
        trainer = Trainer(config, progress=False)
        batch = trainer.samples[:args.batch]
        conversations = {s.image_path: trainer.conversation(s) for s in batch}
        trainer.conversation = lambda sample: conversations[sample.image_path]  # the same text both ways
        trainer.encode_all(batch)
        lengths = [len(training_tokens(trainer.loaded.tokenizer, q, a)[0]) for q, a, _ in conversations.values()]

        def batched():
            trainer.batch_loss(batch)["loss"].backward()

        def one_by_one():
            for sample in batch:
                (trainer.batch_loss([sample])["loss"] / len(batch)).backward()

        batched(), one_by_one()  # warm-up (allocator, kernels)
        trainer.optimizer.zero_grad(set_to_none=True)
        times = {"batched": [], "one_by_one": []}
        for _ in range(args.repeats):
            for name, function in (("batched", batched), ("one_by_one", one_by_one)):
                times[name].append(timed(function))
                trainer.optimizer.zero_grad(set_to_none=True)
        forward = statistics.median(timed(lambda: trainer.batch_loss(batch)) for _ in range(args.repeats))
        steps = []
        for _ in range(args.repeats):  # a step with the gradients of one batch pending, as in training
            batched()
            steps.append(timed(trainer.optimizer.step))
            trainer.optimizer.zero_grad(set_to_none=True)
        optimizer = statistics.median(steps)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    report = {"model": args.model, "batch": args.batch, "text_tokens_mean": round(statistics.fmean(lengths), 1),
              "image_tokens": int(trainer.lisa.config.mm_max_objects * 6) if trainer.lisa.config.mm_vision_source == "objects"
              else None, "threads": torch.get_num_threads(),
              "seconds_per_step": {k: round(v, 3) for k, v in seconds.items()},
              "samples_per_second": {k: round(args.batch / v, 3) for k, v in seconds.items()},
              "speed_up": round(seconds["one_by_one"] / seconds["batched"], 2),
              "batched_profile_s": {"forward": round(forward, 3), "backward": round(seconds["batched"] - forward, 3),
                                    "optimizer_step": round(optimizer, 3)}}
    print(f"training step, batch of {args.batch} conversations ({report['text_tokens_mean']} text tokens on average, "
          f"{torch.get_num_threads()} threads):")
    for name in ("one_by_one", "batched"):
        print(f"  {name:11s} {seconds[name]:7.2f} s/step  {args.batch / seconds[name]:6.2f} samples/s")
    print(f"  speed-up of one padded batch: {report['speed_up']:.2f}x")
    print(f"  batched step: forward {forward:.2f} s, backward {seconds['batched'] - forward:.2f} s, "
          f"optimizer {optimizer:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
