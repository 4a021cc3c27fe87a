#!/usr/bin/env python3
"""The GPU benchmark as one prepared command (issue 15, item 4): LISA-7B's shapes, three loadings.

    python bench/gpu.py --wheels wheels/ --json gpu.json     # a CUDA machine; budget 8 minutes
    python bench/gpu.py --dry-run                            # the CPU, tiny shapes (CI runs this)

1. Installs what the runs need and the machine lacks (bitsandbytes, torchao) from the wheels
   carried in ``--wheels`` (``pip install --no-index --find-links``: no network needed).
2. Writes one random-weight checkpoint in the released layout with LISA-7B's shapes (LLaMA-7B,
   CLIP ViT-L/14 at 224 px, SAM ViT-H; ``bench/model.py`` preset ``7b``), initialised on the GPU
   and stored in fp16 (13.5 GB of disk).
3. Runs ``bench/model.py --checkpoint`` on it once per loading, each in a fresh process (its own
   peak-memory count): **fp16**, **bitsandbytes 4-bit** (NF4, fp16 compute) and **torchao int4**
   (weight-only, groups of 128, bf16 compute). Each run measures our path (KV cache, masks as
   their [SEG] comes) and the official procedure (no cache) on the same model and image.
4. Prints one table (time to first mask, tokens/s, whole request, peak GPU memory, load time,
   ours against official) and writes every number to ``--json``.

A loading that fails (a missing wheel, a kernel the GPU lacks) is reported as such and the others
still run; ``--budget-s`` (default 480 s) stops starting new runs when the rest would not fit.
``--dry-run`` does all of this on the CPU with bench/model.py's ``tiny`` preset and the CPU
loadings (fp32, bitsandbytes 4-bit with bf16 compute, torchao int4 with fp32 compute).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# (name, precision, quantization, backend) on CUDA and, for --dry-run, on the CPU
LOADINGS = {
    "cuda": [("fp16", "fp16", "none", "auto"), ("bitsandbytes 4-bit", "fp16", "4bit", "bitsandbytes"),
             ("torchao int4", "bf16", "4bit", "torchao")],
    "cpu": [("fp32", "fp32", "none", "auto"), ("bitsandbytes 4-bit", "bf16", "4bit", "bitsandbytes"),
            ("torchao int4", "fp32", "4bit", "torchao")],
}
PACKAGES = {"bitsandbytes": "bitsandbytes", "torchao": "torchao"}  # import name -> wheel name
ROWS = [  # (label, where in bench/model.py's report, format)
    ("time to first mask (s)", ("ours", "time_to_first_mask"), "{:.3f}"),
    ("  official (s)", ("official", "time_to_first_mask"), "{:.3f}"),
    ("whole request (s)", ("ours", "total"), "{:.3f}"),
    ("  official (s)", ("official", "total"), "{:.3f}"),
    ("tokens/s", ("ours", "tokens_per_s"), "{:.1f}"),
    ("  official", ("official", "tokens_per_s"), "{:.1f}"),
    ("speed-up, request", ("speedup_total",), "{:.2f}x"),
    ("speed-up, first mask", ("speedup_time_to_first_mask",), "{:.2f}x"),
    ("peak GPU memory (MB)", ("peak_device_memory_mb",), "{:.0f}"),
    ("weights (MB)", ("weights_mb",), "{:.0f}"),
    ("load (s)", ("load_s",), "{:.1f}"),
]


def install_missing(wheels: Path | None) -> dict[str, str]:
    """Install the packages the loadings need that are not importable, from ``wheels``; returns
    what happened per package ("present", "installed", or why not)."""
    status = {}
    for module, wheel in PACKAGES.items():
        if importlib.util.find_spec(module) is not None:
            status[module] = "present"
            continue
        if wheels is None:
            status[module] = "missing (no --wheels given)"
            continue
        run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links",
                              str(wheels), wheel], capture_output=True, text=True)
        status[module] = "installed" if run.returncode == 0 else f"not installed: {run.stderr.strip()[-300:]}"
    return status


def run_loading(checkpoint: Path, device: str, precision: str, quantization: str, backend: str, tokens: int,
                image: str, timeout: float) -> dict:
    """bench/model.py on ``checkpoint`` in a fresh process; its report, or {"error": why}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        command = [sys.executable, str(HERE / "model.py"), "--checkpoint", str(checkpoint), "--device", device,
                   "--precision", precision, "--quantization", quantization, "--quantization-backend", backend,
                   "--tokens", str(tokens), "--image", image, "--json", str(out)]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"did not finish in {timeout:.0f} s"}
        if run.returncode != 0 or not out.is_file():
            lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
            return {"error": lines[-1][-300:] if lines else f"exit code {run.returncode}"}
        return json.loads(out.read_text())


def value(report: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(report, dict) or report.get(key) is None:
            return None
        report = report[key]
    return report


def table(results: dict[str, dict]) -> str:
    names = list(results)
    width = max(14, *(len(n) + 2 for n in names))
    lines = [f"{'':<24}" + "".join(f"{n:>{width}}" for n in names)]
    for label, path, fmt in ROWS:
        cells = []
        for name in names:
            v = value(results[name], path)
            cells.append(f"{fmt.format(v) if v is not None else '-':>{width}}")
        lines.append(f"{label:<24}" + "".join(cells))
    for name in names:
        if "error" in results[name]:
            lines.append(f"{name}: FAILED: {results[name]['error']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny shapes: checks the script end to end")
    parser.add_argument("--wheels", type=Path, help="folder of wheels to install missing packages from")
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoint (default: a temporary folder)")
    parser.add_argument("--tokens", type=int, default=64, help="answer length in tokens")
    parser.add_argument("--image", default="480x640", help="HxW of the test image")
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting runs after this many seconds")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)
    started = time.monotonic()

    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    preset = "tiny" if args.dry_run else "7b"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (dry run)"
    print(f"GPU benchmark: preset {preset}, {gpu}, torch {torch.__version__}", flush=True)
    packages = install_missing(args.wheels)
    print("packages: " + ", ".join(f"{k} {v}" for k, v in packages.items()), flush=True)

    from model import write_preset  # bench/model.py (imports lisa_ros and transformers)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = time.monotonic()
        checkpoint = write_preset(Path(tmp) / f"lisa-{preset}", preset, init_device=device)
        if device == "cuda":
            torch.cuda.empty_cache()
        write_s = time.monotonic() - t0
        print(f"checkpoint with the {preset} shapes written in {write_s:.0f} s", flush=True)
        for name, precision, quantization, backend in LOADINGS[device]:
            left = args.budget_s - (time.monotonic() - started)
            if left < 30:
                results[name] = {"error": f"skipped: the {args.budget_s:.0f} s budget is spent"}
                continue
            print(f"running {name} ({precision}, quantization {quantization}, {backend}) ...", flush=True)
            results[name] = run_loading(checkpoint, device, precision, quantization, backend, args.tokens,
                                        args.image, timeout=left)
    print(table(results))
    total = time.monotonic() - started
    print(f"total {total:.0f} s (checkpoint {write_s:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"device": gpu, "preset": preset, "torch": torch.__version__,
                                         "packages": packages, "checkpoint_write_s": round(write_s, 1),
                                         "total_s": round(total, 1), "results": results}, indent=2))
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
