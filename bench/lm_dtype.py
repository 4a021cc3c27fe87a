#!/usr/bin/env python3
"""The embedded model's language model on this CPU in fp32 and bf16: prefill and per-token decode.

Whether bf16 pays off on a CPU depends on its instructions: with AMX or AVX512-BF16, bf16 matrix
products are fast; with AVX2 only, torch computes bf16 products through conversions, which costs
far more than it saves in compute-bound prefill, while decoding one token at a time is bound by
reading the weights, which bf16 halves. This script measures both on the machine it runs on, with
the embedded model's language-model shapes (read from its assembled ``config.json``; random
weights cost what trained ones do) and a KV cache, in one run, alternating dtypes.

    python bench/lm_dtype.py                       # 150-token prefill, 16 decoded tokens, 2 rounds
    python bench/lm_dtype.py --prompt-tokens 300 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lisa_ros.model.embedded import embedded_checkpoint
from lisa_ros.model.options import native_cpu_bf16

SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "vocab_size", "rms_norm_eps", "rope_theta", "rope_parameters", "rope_scaling", "max_position_embeddings",
                "tie_word_embeddings")


def time_model(model: LlamaForCausalLM, prompt: torch.Tensor, new_tokens: int, repeats: int) -> tuple[float, float]:
    """(seconds per prefill of ``prompt`` [1, P] with the cache, seconds per decoded token)."""
    with torch.inference_mode():
        model(prompt, use_cache=True)  # warm-up: allocator, oneDNN primitive caches
        start = time.perf_counter()
        for _ in range(repeats):
            out = model(prompt, use_cache=True)
        prefill = (time.perf_counter() - start) / repeats
        past, token = out.past_key_values, prompt[:, -1:]
        start = time.perf_counter()
        for _ in range(new_tokens):
            past = model(token, past_key_values=past, use_cache=True).past_key_values
        decode = (time.perf_counter() - start) / new_tokens
    return prefill, decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-tokens", type=int, default=150, help="about the embedded model's prompt length")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    fields = json.loads((embedded_checkpoint() / "config.json").read_text())
    config = LlamaConfig(**{key: fields[key] for key in SHAPE_FIELDS if key in fields})
    torch.manual_seed(0)
    models = {"fp32": LlamaForCausalLM(config).eval()}
    models["bf16"] = LlamaForCausalLM(config).eval().to(torch.bfloat16)
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt_tokens))
    print(f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {native_cpu_bf16()}; "
          f"{config.num_hidden_layers} layers x {config.hidden_size}, prompt {args.prompt_tokens} tokens", flush=True)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            results[name].append(time_model(model, prompt, args.new_tokens, repeats=3))
    print(f"{'dtype':<6}{'prefill (ms)':>14}{'decode (ms/token)':>20}")
    best = {name: (min(p for p, _ in runs), min(d for _, d in runs)) for name, runs in results.items()}
    for name, (prefill, decode) in best.items():
        print(f"{name:<6}{1000 * prefill:>14.0f}{1000 * decode:>20.1f}")
    print(f"bf16 against fp32: prefill {best['fp32'][0] / best['bf16'][0]:.2f}x, "
          f"decode {best['fp32'][1] / best['bf16'][1]:.2f}x (above 1: bf16 faster)")


if __name__ == "__main__":
    main()
