#!/usr/bin/env python3
"""LISA inference: our path against the official procedure, on the same model, in one run.

* ours: the frame is encoded once (SAM + CLIP), generation uses the KV cache, and each mask is
  decoded the moment its [SEG] is generated (time to first mask = when the robot can act);
* official: as the released config runs (``use_cache: false``): every decoding step recomputes
  the CLIP features and the whole sequence, and masks are decoded after the full answer.

Both generate the same number of tokens (greedy; the count is fixed by ours, EOS ignored by the
official loop), from the same released-layout checkpoint with random weights: the compute is that
of real weights of the same shapes. Prints per-stage timings, time to first mask, tokens/s, peak
memory and the speed-up ratio.

    python bench/model.py                      # CPU-sized model (about a minute on 2 cores)
    python bench/model.py --device cuda --precision fp16 --quantization 4bit
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from lisa_ros.engine import EncodedFrame, GenerationOptions, LisaEngine
from lisa_ros.model.loading import load_lisa
from lisa_ros.model.modeling import gather_seg_states
from lisa_ros.model.options import QUANTIZATION_BACKEND_CHOICES, QUANTIZATION_CHOICES, LoadOptions
from lisa_ros.model.sam import SamConfig
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint

PRESETS = {
    # The test-sized model (seconds): for a smoke run of this script.
    "tiny": dict(),
    # Moderate: real token counts (CLIP 224/14 = 256 patches, SAM 1024 px input), small widths.
    "cpu": dict(hidden_size=512, num_layers=8, num_heads=8, clip_hidden_size=256, clip_image_size=224,
                clip_patch_size=14, sam=SamConfig(encoder_embed_dim=256, encoder_depth=4, encoder_num_heads=4,
                                                  encoder_global_attn_indexes=[1, 3])),
    # LISA-7B's shapes (bench/gpu.py): LLaMA-7B, CLIP ViT-L/14 at 224 px, SAM ViT-H. The vocabulary
    # is the small test tokenizer's (388 rows, not 32004): the embedding and LM head are 2 % of a
    # 7B's weights and one row per token of its compute.
    "7b": dict(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, clip_hidden_size=1024,
               clip_layers=24, clip_heads=16, clip_intermediate_size=4096, clip_image_size=224, clip_patch_size=14,
               sam=SamConfig.vit_h(), dtype=torch.float16),
}


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or this process's RSS sampled every 5 ms."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            import psutil

            self._process = psutil.Process()
            self.base = self._process.memory_info().rss
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._process.memory_info().rss)
        self.delta = self.peak - self.base


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def run_official(engine: LisaEngine, rgb: np.ndarray, command: str, script: list[int]) -> dict:
    """The released procedure: no KV cache, CLIP and the full sequence recomputed every step,
    [SEG] states gathered from the last step, masks decoded after the whole answer."""
    from lisa_ros.model.preprocess import clip_preprocess, sam_preprocess

    device, model = engine.device, engine.model
    start = time.perf_counter()
    sam_config, clip = model.config.sam, engine.loaded.clip_preprocessing
    sam_input = sam_preprocess(rgb, sam_config.image_size, sam_config.pixel_mean, sam_config.pixel_std)
    clip_input = clip_preprocess(rgb, clip.image_size, clip.mean, clip.std).to(device)
    prompt, _ = engine.build_prompt(command, explain=False)
    ids = engine.tokenizer.encode_with_image(prompt)
    timings = {"image_preparation": time.perf_counter() - start}

    step_times, generated = [], []
    for token in script:
        step = time.perf_counter()
        features = model.get_image_features(clip_pixels=clip_input)  # recomputed every step, as the official code
        embeds = model.embed_with_image_tokens(torch.tensor([ids + generated], device=device), features).inputs_embeds
        hidden = model.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        model.lm_head(hidden[:, -1]).float().argmax(-1)  # the greedy choice, as computed
        generated.append(token)  # ...replaced by the scripted answer, as on our path
        sync(device)
        step_times.append(time.perf_counter() - step)
    timings["generation"] = sum(step_times)

    start = time.perf_counter()
    image_embedding = model.sam_image_embedding(sam_input.pixels.to(device))
    sync(device)
    timings["sam_encoder"] = time.perf_counter() - start
    start = time.perf_counter()
    # The [SEG] states come from the last step's hidden states (all but the final token).
    states = gather_seg_states(hidden[0], ids + generated, engine.seg_token_id, features.shape[1])
    frame = EncodedFrame(image_embedding, features, sam_input.resized_size, sam_input.original_size, {})
    logits, _ = engine.decode_masks(states, frame)
    sync(device)
    timings["mask_decode"] = time.perf_counter() - start
    timings["total"] = sum(timings.values())
    timings["time_to_first_mask"] = timings["total"] if len(states) else float("nan")
    return {"timings": timings, "tokens": generated, "masks": int(logits.shape[0]),
            "per_token_ms": statistics.fmean(step_times[1:] or step_times) * 1e3}


def write_preset(folder: Path, preset: str, init_device: str = "cpu") -> Path:
    """The preset's random checkpoint in the released layout (4 shards)."""
    return write_tiny_lisa_checkpoint(folder, shards=4, init_device=init_device, **PRESETS[preset])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--tokens", type=int, default=64, help="answer length in tokens on both paths")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default="none")
    parser.add_argument("--quantization-backend", choices=QUANTIZATION_BACKEND_CHOICES, default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image", default="480x640", help="HxW of the test image")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--checkpoint", help="use this released-layout folder (bench/gpu.py writes one for all "
                                             "runs) instead of writing the preset's")
    parser.add_argument("--init-device", default="cpu", help="where the preset's random model is initialised")
    args = parser.parse_args(argv)

    options = LoadOptions(precision=args.precision, quantization=args.quantization,
                          quantization_backend=args.quantization_backend, device=args.device)
    t0 = time.perf_counter()
    if args.checkpoint:
        write_s = 0.0
        loaded = load_lisa(args.checkpoint, options)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_preset(Path(tmp) / f"lisa-{args.preset}", args.preset, args.init_device)
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded = load_lisa(folder, options)
    load_s = time.perf_counter() - t0
    engine = LisaEngine(loaded, GenerationOptions(max_new_tokens=args.tokens, stop_after_seg=False))
    height, width = (int(v) for v in args.image.split("x"))
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    command = "what should I use to reach the shelf?"
    # A realistic answer shape: the mask sentence first, then an explanation, `--tokens` long.
    # Random weights would not produce it, so both paths follow this script (teacher forcing:
    # the same compute as greedy decoding, the argmax is still computed at every step).
    text = "Sure, it is [SEG]. " + "The step ladder is tall enough to reach the top shelf safely. " * 20
    script = loaded.tokenizer.encode(text)[: args.tokens]
    engine.answer(rgb, command, forced_ids=script[:4])  # warm-up (allocator, kernels)

    with PeakMemory(loaded.device) as ours_memory:
        answer, _ = engine.answer(rgb, command, forced_ids=script)
    tokens = len(answer.token_ids)
    with PeakMemory(loaded.device) as official_memory:
        official = run_official(engine, rgb, command, script)

    ours = dict(answer.timings)
    ours_per_token = ours["decode"] / max(1, tokens - 1) * 1e3
    ratio = official["timings"]["total"] / ours["total"]
    memory = loaded.memory_bytes()
    device_peak = torch.cuda.max_memory_allocated(loaded.device) if loaded.device.type == "cuda" else None
    report = {
        "preset": args.preset, "device": str(loaded.device), "precision": args.precision,
        "quantization": args.quantization, "quantization_backend": loaded.options.quantization_backend,
        "image": [height, width], "tokens": tokens,
        "masks": len(answer.masks), "weights_mb": round(memory["total"] / 2**20, 1), "load_s": round(load_s, 2),
        "peak_device_memory_mb": round(device_peak / 2**20, 1) if device_peak is not None else None,
        "ours": {**{k: round(v, 4) for k, v in ours.items()}, "per_token_ms": round(ours_per_token, 2),
                 "tokens_per_s": round(tokens / ours["total"], 2),
                 "peak_memory_delta_mb": round(ours_memory.delta / 2**20, 1)},
        "official": {**{k: round(v, 4) for k, v in official["timings"].items()},
                     "per_token_ms": round(official["per_token_ms"], 2),
                     "tokens_per_s": round(tokens / official["timings"]["total"], 2),
                     "peak_memory_delta_mb": round(official_memory.delta / 2**20, 1)},
        "speedup_total": round(ratio, 2),
        "speedup_time_to_first_mask": round(official["timings"]["time_to_first_mask"] / ours["time_to_first_mask"], 2)
        if answer.masks and official["masks"] else None,
        "same_tokens": answer.token_ids == official["tokens"],
    }
    print(f"model: preset {args.preset} ({report['weights_mb']} MB of weights), {loaded.device}, {args.precision}, "
          f"quantization {args.quantization} ({loaded.options.quantization_backend}); image {width}x{height}; "
          f"{tokens} tokens, {len(answer.masks)} masks "
          f"(checkpoint written in {write_s:.1f} s)")
    print(f"{'stage (s)':<22}{'ours':>10}{'official':>10}")
    for key in ("image_preparation", "clip", "sam_encoder", "prefill", "decode", "generation", "mask_decode",
                "time_to_first_mask", "total"):  # the engine's parts (lisa_ros.timing) and the official stages
        a, b = ours.get(key), official["timings"].get(key)
        fmt = lambda v: f"{v:10.3f}" if v is not None else f"{'-':>10}"  # noqa: E731
        print(f"{key:<22}{fmt(a)}{fmt(b)}")
    print(f"{'per token (ms)':<22}{ours_per_token:10.2f}{official['per_token_ms']:10.2f}")
    print(f"{'tokens/s':<22}{report['ours']['tokens_per_s']:10.2f}{report['official']['tokens_per_s']:10.2f}")
    print(f"{'peak memory +MB':<22}{report['ours']['peak_memory_delta_mb']:10.1f}{report['official']['peak_memory_delta_mb']:10.1f}")
    if device_peak is not None:
        print(f"peak GPU memory, load and both paths: {report['peak_device_memory_mb']:.0f} MB")
    print(f"speed-up, whole request: {ratio:.2f}x; time to first mask: {report['speedup_time_to_first_mask']}x; "
          f"same tokens on both paths: {report['same_tokens']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
