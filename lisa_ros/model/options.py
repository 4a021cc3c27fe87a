"""How to load a model: the one place for the precision, quantization and device choices.

The CLI, the node's parameters and the launch file offer these choices and pass them on unchanged;
:func:`resolve_precision` and :func:`resolve_quantization_backend` are the "auto" rules. No torch import at module level, so the ROS
parameter table and the launch file can use the choices cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass

from lisa_ros.errors import UsageError
from lisa_ros.model.prompts import DEFAULT_EXPLAIN_SUFFIX, DEFAULT_SEGMENT_SUFFIX

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
QUANTIZATION_CHOICES = ("none", "4bit", "8bit")
# Who quantizes: bitsandbytes (NF4 / LLM.int8, the official tools' choice) or torchao (int4 / int8
# weight-only; runs on any CUDA device, a Jetson's included, and on the CPU). "auto": see
# resolve_quantization_backend.
QUANTIZATION_BACKEND_CHOICES = ("auto", "bitsandbytes", "torchao")
# Kept in 16-bit under quantization: SAM always (as the official code does), and the small but
# sensitive heads unless ``quantize_heads`` (the official code quantizes those).
UNQUANTIZED_ALWAYS = ["model.visual_model"]
UNQUANTIZED_HEADS = ["lm_head", "model.mm_projector", "model.text_hidden_fcs"]


def is_valid_device(device: str) -> bool:
    return device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())


def _is_cuda(device: str) -> bool:
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def native_cpu_bf16() -> str:
    """The bf16 instructions this CPU has: ``"AMX"``, ``"AVX512-BF16"`` or ``"none"``. Without them
    torch emulates bf16 matrix products, and bf16 is slower than fp32 (docs/PERFORMANCE.md)."""
    import torch

    try:  # torch's own CPU probes (private: a torch without them counts as "none")
        if torch.cpu._is_amx_tile_supported():
            return "AMX"
        return "AVX512-BF16" if torch.cpu._is_avx512_bf16_supported() else "none"
    except AttributeError:
        return "none"


def resolve_quantization_backend(backend: str, device: str) -> str:
    """``auto`` -> torchao on aarch64 (NVIDIA Jetson: bitsandbytes' PyPI wheels stop at the first
    kernel launch on Orin, bitsandbytes issue #1930) and wherever bitsandbytes is not installed;
    bitsandbytes otherwise (x86-64 CUDA and CPU: what the official tools use). Others unchanged."""
    if backend != "auto":
        return backend
    import importlib.util
    import platform

    if platform.machine().lower() in ("aarch64", "arm64") or importlib.util.find_spec("bitsandbytes") is None:
        return "torchao"
    return "bitsandbytes"


# The choices in one line each (the CLI's help and the node's parameter descriptions).
BACKEND_RULE = ("bitsandbytes (4bit NF4, 8bit LLM.int8) | torchao (int4/int8 weight-only; any CUDA device incl. "
                "Jetson, and the CPU) | auto (torchao on aarch64/Jetson or without bitsandbytes, else bitsandbytes)")
PRECISION_AUTO_RULE = ("auto: CUDA bf16, fp16 when bitsandbytes quantizes; CPU bf16 with AMX or AVX512-BF16, else fp32; "
                       "quantized on the CPU: bf16 by bitsandbytes, fp32 by torchao")


def resolve_precision(precision: str, quantization: str, device: str, backend: str = "bitsandbytes") -> str:
    """``auto`` -> on CUDA bf16, or when quantized fp16 compute (bitsandbytes, as the official
    tools) or bf16 (torchao: its int4 kernel, tinygemm, computes in bf16). On the CPU: bf16 when
    bitsandbytes quantizes (its layers compute in 16 bit), fp32 when torchao does (its CPU layers
    compute in fp32); unquantized, bf16 where the CPU has native bf16 instructions
    (:func:`native_cpu_bf16`: AMX or AVX512-BF16; measured on AVX512-BF16 1.43x faster per request
    than fp32, same held-out gIoU, docs/PERFORMANCE.md) and fp32 elsewhere (emulated bf16 is slower than fp32).
    ``backend`` is a resolved one. Others unchanged."""
    if precision != "auto":
        return precision
    quantized = quantization != "none"
    if _is_cuda(device):
        return "fp16" if quantized and backend == "bitsandbytes" else "bf16"
    if quantized:
        return "bf16" if backend == "bitsandbytes" else "fp32"
    return "bf16" if native_cpu_bf16() != "none" else "fp32"


@dataclass(frozen=True)
class LoadOptions:
    """How to load: precision, quantization, device and the CLIP tower.

    precision: ``auto``/``fp32``/``bf16``/``fp16`` (compute dtype; see :func:`resolve_precision`).
    quantization: ``none``/``4bit``/``8bit`` of the language model's linear layers, by
    quantization_backend: ``bitsandbytes`` (4bit: NF4 with double quantization, 16-bit compute;
    8bit: LLM.int8), ``torchao`` (4bit: int4 weight-only, groups of 128 on CUDA (bf16 compute),
    of 32 on the CPU, where the int4 values are stored one per byte; 8bit: int8 weight-only,
    one scale per output channel) or ``auto`` (:func:`resolve_quantization_backend`).
    device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    vision_tower: override of config.json's CLIP tower (hub id or folder).
    quantize_heads: also quantize lm_head, mm_projector and text_hidden_fcs (official behaviour).
    """

    precision: str = "auto"  # as the CLI and the node: one default for every way in
    quantization: str = "none"
    quantization_backend: str = "auto"
    device: str = "auto"
    vision_tower: str | None = None
    quantize_heads: bool = False

    def validate(self) -> None:
        """Raises :class:`UsageError` naming the bad choice."""
        if self.precision not in PRECISION_CHOICES:
            raise UsageError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if self.quantization not in QUANTIZATION_CHOICES:
            raise UsageError(f"quantization must be one of {', '.join(QUANTIZATION_CHOICES)}, "
                             f"got {self.quantization!r}")
        if self.quantization_backend not in QUANTIZATION_BACKEND_CHOICES:
            raise UsageError(f"quantization_backend must be one of {', '.join(QUANTIZATION_BACKEND_CHOICES)}, "
                             f"got {self.quantization_backend!r}")
        if not is_valid_device(str(self.device)):
            raise UsageError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.quantization == "none":
            return
        backend = resolve_quantization_backend(self.quantization_backend, self.device)
        if backend == "bitsandbytes" and self.precision == "fp32":
            raise UsageError("bitsandbytes' quantized layers compute in 16 bit: use precision bf16 or fp16 "
                             "(or quantization_backend torchao, which also computes in fp32)")
        if (backend == "torchao" and self.quantization == "4bit" and self.precision not in ("auto", "bf16")
                and _is_cuda(self.device)):
            raise UsageError("torchao's int4 kernel on CUDA (tinygemm) computes in bf16: use precision bf16 or auto")

    def resolved(self) -> "LoadOptions":
        """A copy with ``auto`` precision and backend replaced by the concrete choices (the backend
        stays ``auto`` only when nothing is quantized)."""
        from dataclasses import replace

        backend = (self.quantization_backend if self.quantization == "none"
                   else resolve_quantization_backend(self.quantization_backend, self.device))
        return replace(self, quantization_backend=backend,
                       precision=resolve_precision(self.precision, self.quantization, self.device, backend))


@dataclass(frozen=True)
class GenerationOptions:
    """Generation limits and prompt suffixes (immutable: pass changed copies per call).

    stop_after_seg: when no explanation is asked for, stop as soon as the first sentence ends:
    it holds the [SEG] tokens ("Sure, [SEG]."), or, without one, says why there is no target
    ("Sorry, nothing here is round."); the answer does not run on to max_new_tokens.
    max_masks: the most [SEG] tokens one answer may decode; one more ends generation with
    ``stop_reason`` ``max_masks`` and a warning (runaway [SEG] tokens are a known failure of fp16
    and quantized LISA, issue #153 upstream).
    draft_tokens: the most tokens guessed from earlier answers and checked in one forward pass
    (:mod:`lisa_ros.drafting`); 0 generates one token per pass. The answer is greedy either way
    and the same up to rounding (a near-tie can go the other way in a pass over several tokens).
    """

    max_new_tokens: int = 512
    stop_after_seg: bool = True
    max_masks: int = 8
    draft_tokens: int = 8
    segment_suffix: str = DEFAULT_SEGMENT_SUFFIX
    explain_suffix: str = DEFAULT_EXPLAIN_SUFFIX
