"""The model's benchmarks run end to end at tiny sizes (what they print and write is checked; the
numbers themselves are measurements, not asserted): bench/model.py (our cached path against the
official full-sequence one) and bench/gpu.py (the prepared GPU benchmark, in its CPU dry run).
The embedded model's benchmarks are tested in test_embedded_model.py, the transport's, the
soak's and the tracker's beside their subjects."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_model_benchmark_runs_and_reports_the_ratio(tmp_path):
    bench = Path(__file__).resolve().parent.parent / "bench" / "model.py"
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(bench), "--preset", "tiny", "--tokens", "8", "--image", "60x80",
                          "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "speed-up, whole request" in run.stdout
    report = json.loads(out.read_text())
    assert report["tokens"] == 8 and report["masks"] == 1 and report["same_tokens"]
    assert report["ours"]["total"] > 0 and report["official"]["total"] > 0
    # every engine part reaches the report under its lisa_ros.timing name (a renamed part would read 0)
    assert report["ours"]["image_preparation"] > 0 and report["ours"]["sam_encoder"] > 0
    assert report["ours"]["prefill"] > 0 and report["ours"]["mask_decode"] > 0


def test_gpu_benchmark_dry_run_measures_every_loading(tmp_path):
    """bench/gpu.py, the prepared GPU benchmark, end to end on the CPU (--dry-run: tiny shapes,
    the CPU loadings): every loading runs in its own process and reaches the table and the JSON."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, str(bench), "--dry-run", "--tokens", "8", "--image", "60x80",
                          "--json", str(out), "--wheels", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["packages"] == {"bitsandbytes": "present", "torchao": "present"}
    assert list(report["results"]) == ["fp32", "bitsandbytes 4-bit", "torchao int4"]
    for name, result in report["results"].items():
        assert "error" not in result, (name, result)
        assert result["tokens"] == 8 and result["same_tokens"], name
        assert result["ours"]["time_to_first_mask"] > 0 and result["official"]["total"] > 0, name
    assert report["results"]["torchao int4"]["quantization_backend"] == "torchao"
    assert report["results"]["bitsandbytes 4-bit"]["quantization_backend"] == "bitsandbytes"
    assert "time to first mask (s)" in run.stdout and "torchao int4" in run.stdout
