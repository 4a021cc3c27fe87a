#!/usr/bin/env python3
"""The embedded model's request on the CPU: before and after the faster path, in one run.

Each request is what the node does for a new camera frame: preprocess, SAM (TinyViT) encoder,
image tokens, prefill, greedy decoding with the KV cache, and a mask decoded at each [SEG]
(``LisaEngine.answer`` on a raw image, nothing cached between requests). Variants:

* ``before``: TinyViT layer by layer (``set_fast_inference(False)``: BatchNorm as its own pass,
  contiguous maps, MBConv on whole maps), language model in fp32, one token per forward pass
  (``draft_tokens: 0``);
* ``encoder``: TinyViT's inference path (BatchNorm folded into the convolutions, channels-last
  maps, MBConv in bands of rows), otherwise as ``before``;
* ``drafted``: as ``encoder``, with up to 8 drafted tokens checked per forward pass
  (``draft_tokens: 8``, :mod:`lisa_ros.drafting`; the same greedy answer in fewer passes);
* ``ahead``: as ``encoder``, about a frame encoded before the clock starts (``encode_frame``,
  untimed); one token per pass;
* ``drafted+ahead``: as ``drafted``, about a frame the node encoded while idle (node parameter
  ``encode_ahead``): the frame encoded and the prompt's start through the image prefilled before
  the clock starts (``encode_frame(prefill=True)``, untimed).
* ``drafted+packed`` and ``drafted+packed+ahead``: as ``drafted`` and ``drafted+ahead``, the
  language model's linear layers packed by oneDNN (:mod:`lisa_ros.model.packed_linear`, what the
  node and the CLI do on the CPU in fp32). ``drafted+packed+ahead`` is the whole faster path.
* ``encoder+int8``: as ``encoder``, the language model's linear layers torchao int8 weight-only
  (``quantization: 8bit``, ``quantization_backend: torchao``);
* ``encoder+bf16``, ``bf16+ahead`` and ``bf16+drafted+ahead``: as ``encoder``, ``ahead`` and
  ``drafted+ahead`` with the whole model in bf16 (``precision: bf16``). They pay off only on a CPU
  that computes bf16 natively (AVX512-BF16 or AMX; the header line says which this one has).

The draft table is what a node would have after answering other scenes: before timing, the
``encoder`` engine answers ``--warm-scenes`` scenes of the validation split, and every drafted
request starts from a copy of that table (so no request is helped by its own answer in an earlier
round).

The variants take turns request by request on the same held-out scenes (split "test"), so a
neighbour that slows the machine slows all of them alike. Prints the median per stage, time to
first mask and whole request, the ratio to ``before``, and each variant's mask IoU and answer
agreement against ``before``.

    python bench/embedded.py --variants encoder,drafted,drafted+packed,drafted+packed+ahead   # about 5 minutes on 2 cores
    python bench/embedded.py                    # all variants (the bf16 ones: a CPU with bf16 instructions)
    python bench/embedded.py --scenes 12 --rounds 2 --json runs/bench_embedded.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from lisa_ros.data.scenes import split_scene
from lisa_ros.drafting import NGramDrafter
from lisa_ros.engine import GenerationOptions, LisaEngine
from lisa_ros.evaluate.metrics import intersection_union, query_iou
from lisa_ros.model.loading import load_lisa
from lisa_ros.model.options import LoadOptions, native_cpu_bf16
from lisa_ros.model.packed_linear import pack_language_model
from lisa_ros.model.tiny_vit import set_fast_inference

VARIANTS = ("before", "encoder", "drafted", "ahead", "drafted+ahead", "drafted+packed", "drafted+packed+ahead",
            "encoder+int8", "encoder+bf16", "bf16+ahead", "bf16+drafted+ahead")
# The engine's parts and latencies (lisa_ros.timing), in the order a request meets them.
STAGES = ("image_preparation", "objects", "sam_encoder", "prefill", "decode", "mask_decode", "time_to_first_mask", "total")
# Per request beside the stages: the answer's tokens, the language model's forward passes (the
# prefill's included), and decode seconds per pass after the prefill (answers of different lengths
# make the decode stage alone unfair between variants that answer differently).
PER_TOKEN = ("generated_tokens", "forward_passes", "decode_per_pass")
SCENE_SEED = 2  # the generator's seed of the held-out splits (lisa-ros scenes)


def first_mask(answer, shape: tuple[int, int]) -> np.ndarray:
    return answer.masks[0].mask if answer.masks else np.zeros(shape, bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=6, help="held-out test scenes (one query type each in turn)")
    parser.add_argument("--rounds", type=int, default=3, help="requests per scene and variant (the first is warm-up)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--warm-scenes", type=int, default=12,
                        help="validation scenes answered before timing, whose answers fill the draft table")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset (the bf16 ones take minutes per round on a CPU without bf16 "
                             "instructions); 'before' is always run, as the reference")
    args = parser.parse_args()

    chosen = {"before"} | set(args.variants.split(","))
    if not chosen <= set(VARIANTS):
        parser.error(f"--variants: unknown {sorted(chosen - set(VARIANTS))}; choose from {', '.join(VARIANTS)}")
    generation = GenerationOptions(max_new_tokens=args.max_new_tokens)
    one_per_pass = GenerationOptions(max_new_tokens=args.max_new_tokens, draft_tokens=0)
    options = {"fp32": LoadOptions(precision="fp32", device="cpu"), "packed": LoadOptions(precision="fp32", device="cpu"),
               "int8": LoadOptions(precision="fp32", quantization="8bit", quantization_backend="torchao", device="cpu"),
               "bf16": LoadOptions(precision="bf16", device="cpu")}
    # name: (loading, TinyViT's inference path, drafting, before the request: nothing, the frame
    # encoded, or the frame encoded and the prompt's start prefilled)
    plan = {"before": ("fp32", False, False, None), "encoder": ("fp32", True, False, None),
            "drafted": ("fp32", True, True, None), "ahead": ("fp32", True, False, "encoded"),
            "drafted+ahead": ("fp32", True, True, "prefilled"), "drafted+packed": ("packed", True, True, None),
            "drafted+packed+ahead": ("packed", True, True, "prefilled"), "encoder+int8": ("int8", True, False, None),
            "encoder+bf16": ("bf16", True, False, None), "bf16+ahead": ("bf16", True, False, "encoded"),
            "bf16+drafted+ahead": ("bf16", True, True, "prefilled")}
    engines = {kind: LisaEngine(load_lisa("embedded", options[kind]), generation)
               for kind in {plan[name][0] for name in chosen} | {"fp32"}}
    if "packed" in engines and not pack_language_model(engines["packed"].model):
        parser.error("--variants: the packed ones need oneDNN's packed linear product, which this torch lacks")
    variants = {name: (engines[kind], fast, generation if drafting else one_per_pass, ahead)
                for name, (kind, fast, drafting, ahead) in plan.items() if name in chosen}
    scenes = [split_scene(SCENE_SEED, "test", index) for index in range(args.scenes)]
    print(f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {native_cpu_bf16()}, "
          f"{len(scenes)} scenes x {args.rounds} rounds, {len(variants)} variants", flush=True)

    # The draft table a node has after answering other scenes (the model's own answers).
    warm = NGramDrafter()
    for index in range(args.warm_scenes):
        other = split_scene(SCENE_SEED, "val", index)
        warm.observe(engines["fp32"].answer(other.rgb, other.query, options=one_per_pass)[0].token_ids)
    print(f"draft table: answers to {args.warm_scenes} validation scenes, {len(warm)} contexts", flush=True)

    timings: dict[str, dict[str, list[float]]] = {name: {stage: [] for stage in STAGES + PER_TOKEN}
                                                  for name in variants}
    answers: dict[str, list] = {name: [None] * len(scenes) for name in variants}
    for round_index in range(args.rounds):
        for scene_index, scene in enumerate(scenes):
            for name, (engine, fast, generation_options, ahead) in variants.items():
                set_fast_inference(engine.model.visual_model.image_encoder, fast)
                engine.drafter = copy.deepcopy(warm)
                frame = engine.encode_frame(scene.rgb, prefill=ahead == "prefilled") if ahead else scene.rgb
                answer, _ = engine.answer(frame, scene.query, options=generation_options)
                answers[name][scene_index] = answer
                if round_index == 0:
                    continue  # warm-up: allocator, oneDNN primitive caches
                for stage in STAGES:
                    timings[name][stage].append(answer.timings.get(stage, 0.0))
                timings[name]["generated_tokens"].append(answer.generated_tokens)
                timings[name]["forward_passes"].append(answer.forward_passes)
                timings[name]["decode_per_pass"].append(answer.timings.get("decode", 0.0) / max(1, answer.forward_passes - 1))
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{name} {statistics.median(timings[name]['total']):.2f} s" for name in variants if timings[name]["total"]),
            flush=True)

    report = {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "native_bf16": native_cpu_bf16(),
              "scenes": len(scenes), "timed_requests_per_variant": len(scenes) * (args.rounds - 1), "variants": {}}
    for name in variants:
        medians = {stage: statistics.median(timings[name][stage]) for stage in STAGES if timings[name][stage]}
        ious, same_text = [], 0
        for scene, reference, answer in zip(scenes, answers["before"], answers[name]):
            shape = scene.rgb.shape[:2]
            expected, got = first_mask(reference, shape), first_mask(answer, shape)
            ious.append(query_iou(*intersection_union(got, expected)))  # 1 when both are empty (no [SEG])
            same_text += answer.text == reference.text
        report["variants"][name] = {"median_s": medians, **{f"median_{key}": statistics.median(timings[name][key])
                                                            for key in PER_TOKEN if timings[name][key]},
                                    "mask_iou_vs_before": float(np.mean(ious)),
                                    "min_mask_iou_vs_before": float(np.min(ious)), "same_answer": same_text}

    before = report["variants"]["before"]["median_s"]
    print(f"\nmedian seconds per request ({report['timed_requests_per_variant']} timed requests per variant)")
    width = {name: max(14, len(name) + 2) for name in variants}  # one column per variant
    print(f"{'stage':<20}" + "".join(f"{name:>{width[name]}}" for name in variants))
    for stage in STAGES:
        print(f"{stage:<20}" + "".join(f"{report['variants'][name]['median_s'].get(stage, 0.0):>{width[name]}.3f}"
                                       for name in variants))
    print(f"{'answer tokens':<20}" + "".join(f"{report['variants'][name]['median_generated_tokens']:>{width[name]}.0f}"
                                              for name in variants))
    print(f"{'forward passes':<20}" + "".join(f"{report['variants'][name]['median_forward_passes']:>{width[name]}.0f}"
                                               for name in variants))
    print(f"{'decode ms per pass':<20}" + "".join(
        f"{1000 * report['variants'][name]['median_decode_per_pass']:>{width[name]}.1f}" for name in variants))
    print(f"{'ratio (total)':<20}" + "".join(
        f"{before['total'] / report['variants'][name]['median_s']['total']:>{width[name] - 1}.2f}x" for name in variants))
    print(f"{'mask IoU vs before':<20}" + "".join(
        f"{report['variants'][name]['mask_iou_vs_before']:>{width[name]}.3f}" for name in variants))
    print(f"{'same answer':<20}" + "".join(
        f"{report['variants'][name]['same_answer']:>{width[name] - 3}}/{len(scenes):<2}" for name in variants))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
