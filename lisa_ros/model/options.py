"""How to load a model: the one place for the precision, quantization and device choices.

The CLI, the node's parameters and the launch file offer these choices and pass them on unchanged;
:func:`resolve_precision` is the one "auto" rule. No torch import at module level, so the ROS
parameter table and the launch file can use the choices cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass

from lisa_ros.errors import UsageError

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
QUANTIZATION_CHOICES = ("none", "4bit", "8bit")
# Kept in 16-bit under quantization: SAM always (as the official code does), and the small but
# sensitive heads unless ``quantize_heads`` (the official code quantizes those).
UNQUANTIZED_ALWAYS = ["model.visual_model"]
UNQUANTIZED_HEADS = ["lm_head", "model.mm_projector", "model.text_hidden_fcs"]


def is_valid_device(device: str) -> bool:
    return device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())


def resolve_precision(precision: str, quantization: str, device: str) -> str:
    """``auto`` -> what the official tools use: on CUDA bf16, or fp16 compute when quantized; on
    the CPU fp32, or bf16 when quantized (quantized layers compute in 16 bit). Others unchanged."""
    if precision != "auto":
        return precision
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    quantized = quantization != "none"
    if cuda:
        return "fp16" if quantized else "bf16"
    return "bf16" if quantized else "fp32"


@dataclass(frozen=True)
class LoadOptions:
    """How to load: precision, quantization, device and the CLIP tower.

    precision: ``auto``/``fp32``/``bf16``/``fp16`` (compute dtype; see :func:`resolve_precision`).
    quantization: ``none``/``4bit`` (NF4, double quantization, 16-bit compute)/``8bit`` (LLM.int8).
    device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    vision_tower: override of config.json's CLIP tower (hub id or folder).
    quantize_heads: also quantize lm_head, mm_projector and text_hidden_fcs (official behaviour).
    """

    precision: str = "bf16"
    quantization: str = "none"
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
        if not is_valid_device(str(self.device)):
            raise UsageError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.quantization != "none" and self.precision == "fp32":
            raise UsageError("quantized models compute in 16 bit: use precision bf16 or fp16")

    def resolved(self) -> "LoadOptions":
        """A copy with ``auto`` precision replaced by the concrete choice."""
        from dataclasses import replace

        return replace(self, precision=resolve_precision(self.precision, self.quantization, self.device))
