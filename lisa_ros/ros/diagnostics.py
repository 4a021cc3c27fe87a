"""Request statistics and the node's /diagnostics message (diagnostic_updater is not on PyPI)."""
from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from lisa_ros.ros.messages import STAGES


RATE_TOLERANCE = 0.1  # a camera's rate may differ this much (fraction) from its expected_rate
# How long a model failure keeps the model status at WARN.
RECENT_FAILURE_S = 60.0


class RequestStats:
    """Counters per outcome, last/mean seconds per stage, and the last model failure (its message
    and monotonic time) (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.last_failure = ""
        self.last_failure_at: float | None = None
        self.outcomes: Counter[str] = Counter()
        self.served = self.rejected = self.failed = 0
        self._sums = dict.fromkeys(STAGES, 0.0)
        self.last = dict.fromkeys(STAGES, 0.0)
        self._timed = 0

    def record(self, outcome: str, kind: str, timings: dict[str, float] | None = None, message: str = "") -> None:
        """kind: "served", "rejected" (bad input, busy, not ready) or "failed" (model error, whose
        ``message`` is kept as the last failure)."""
        with self._lock:
            self.outcomes[outcome] += 1
            setattr(self, kind, getattr(self, kind) + 1)
            if kind == "failed":
                self.last_failure, self.last_failure_at = message, time.monotonic()
            if timings:
                self._timed += 1
                for stage in STAGES:
                    self.last[stage] = timings.get(stage, 0.0)
                    self._sums[stage] += timings.get(stage, 0.0)

    def means(self) -> dict[str, float]:
        with self._lock:
            return {k: (v / self._timed if self._timed else 0.0) for k, v in self._sums.items()}


def device_description(device) -> str:
    """A hardware id for the model's ``torch.device``: "cuda:0 NVIDIA H200" or "cpu AMD EPYC
    9R14 (2 cores)" (the CPU model from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{device.type} {model} ({os.cpu_count()} cores)".replace("  ", " ")


def model_values(model: str, engine, hardware_id: str, weights_bytes: int, load_error: str,
                 queue_fill: int) -> tuple[dict, dict]:
    """(model_info, memory) for :func:`build`: the ``model`` parameter, and with a loaded
    ``engine`` (lisa_ros.engine.LisaEngine, None while unconfigured) its device, ``hardware_id``
    (:func:`device_description`), precision and quantization; the load error (when one); the
    queue's fill. ``memory``: weights and, on CUDA, allocated and peak GPU memory (bytes)."""
    model_info, memory = {"model": model}, {}
    if engine is not None:
        loaded = engine.loaded
        model_info.update(device=str(loaded.device), hardware=hardware_id,
                          precision=str(loaded.dtype).replace("torch.", ""), quantization=loaded.options.quantization)
        if loaded.options.quantization != "none":
            model_info["quantization_backend"] = loaded.options.quantization_backend
        memory = {"weights": weights_bytes}
        if loaded.device.type == "cuda":
            import torch

            memory["gpu_allocated"] = torch.cuda.memory_allocated(loaded.device)
            memory["gpu_peak"] = torch.cuda.max_memory_allocated(loaded.device)
    if load_error:
        model_info["error"] = load_error
    model_info["queue"] = queue_fill
    return model_info, memory


def camera_values(camera, now: float, max_age_s: float) -> dict:
    """The diagnostics of one lisa_ros.ros.cameras.CameraInput: name, frame_id, age of its latest
    frame (s, None before the first), colour rate, its expected value and jitter (Hz, Hz or None,
    ms), depth rate (Hz), frames received, image-callback latency (ms), the max_frame_age it is
    judged by (s), why its depth or camera_info was last ignored (None when they were used), a clock problem of
    its stamps (None when none) and, before the first frame, why it may be silent. ``now``:
    monotonic seconds."""
    latency = camera.callback_latency.summary_ms()
    age = camera.age_s()
    return {"name": camera.name, "frame_id": camera.frame_id or None, "age_s": age,
            "rate_hz": camera.color_rate.rate_hz(now), "expected_rate_hz": camera.expected_rate_hz or None,
            "jitter_ms": camera.color_rate.jitter_ms(),
            "depth_rate_hz": camera.depth_rate.rate_hz(now), "frames": camera.frames_received,
            "callback_latency_mean_ms": latency["mean"], "callback_latency_p99_ms": latency["p99"],
            "callback_latency_max_ms": latency["max"], "max_age_s": max_age_s,
            "input_problem": camera.input_problem or None,
            "clock_problem": camera.clock_problem() or None,
            "silence": camera.silence_reason() if age is None else None}


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.4f}"
    return KeyValue(key=key, value=str(value))


def build(node_name: str, stamp, state: str, model_info: dict, stats: RequestStats,
          cameras: list[dict], memory: dict) -> DiagnosticArray:
    """One array: the model status, then one status per camera input."""
    array = DiagnosticArray()
    array.header.stamp = stamp
    model = DiagnosticStatus(name=f"{node_name}: model",
                             hardware_id=str(model_info.get("hardware") or model_info.get("device", "")))
    if state == "error":
        model.level, model.message = DiagnosticStatus.ERROR, model_info.get("error", "model failed to load")
    elif state != "active":
        model.level, model.message = DiagnosticStatus.WARN, f"node is {state}"
    elif stats.last_failure_at is not None and time.monotonic() - stats.last_failure_at < RECENT_FAILURE_S:
        ago = time.monotonic() - stats.last_failure_at
        model.level, model.message = DiagnosticStatus.WARN, f"serving; model failure {ago:.0f} s ago: {stats.last_failure}"
    else:
        model.level, model.message = DiagnosticStatus.OK, "serving"
    values = [_kv("state", state)] + [_kv(k, v) for k, v in model_info.items()]
    values += [_kv(f"memory_{k}_mb", v / 2**20) for k, v in memory.items()]
    values += [_kv("requests_served", stats.served), _kv("requests_rejected", stats.rejected),
               _kv("requests_failed", stats.failed)]
    values += [_kv(f"outcome_{k}", v) for k, v in sorted(stats.outcomes.items())]
    if stats.last_failure_at is not None:
        values += [_kv("last_failure", stats.last_failure),
                   _kv("last_failure_age_s", time.monotonic() - stats.last_failure_at)]
    means = stats.means()
    for stage in STAGES:
        values += [_kv(f"last_{stage}_s", stats.last[stage]), _kv(f"mean_{stage}_s", means[stage])]
    model.values = values
    array.status.append(model)
    for camera in cameras:
        # The camera's frame (e.g. front_color_optical_frame) identifies it, as a device would.
        status = DiagnosticStatus(name=f"{node_name}: camera {camera['name']}",
                                  hardware_id=camera["frame_id"] or camera["name"])
        age = camera["age_s"]
        expected = camera["expected_rate_hz"]
        if age is None:
            problems = [f"no frame received yet: {camera['silence']}"]
        else:  # every problem at once: fixing one must not reveal the next only then
            problems = []
            if camera["max_age_s"] and age > camera["max_age_s"]:
                problems.append(f"latest frame is {age:.1f} s old" if math.isfinite(age)
                                else "latest frame is from before the clock went back")
            if camera.get("clock_problem"):
                problems.append(camera["clock_problem"])
            if expected and abs(camera["rate_hz"] - expected) > RATE_TOLERANCE * expected:
                problems.append(f"colour at {camera['rate_hz']:.1f} Hz, expected {expected:g} Hz "
                                f"(jitter {camera['jitter_ms']:.1f} ms)")
            if camera["input_problem"]:
                problems.append(camera["input_problem"])
        status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        status.message = "; ".join(problems) or "receiving"
        status.values = [_kv(k, v if v is not None else "none") for k, v in camera.items() if k != "name"]
        array.status.append(status)
    return array
