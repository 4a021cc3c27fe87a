"""The language model's linear layers with weights pre-packed by oneDNN, for fp32 inference on the CPU.

A forward pass over a few tokens (a drafted pass checks 1 + 8, :mod:`lisa_ros.drafting`) multiplies
``[M, in]`` by each ``[out, in]`` weight with M small. torch's default fp32 product re-lays the
weight out for every such call; oneDNN can lay it out once for small M
(``torch.ops.mkldnn._reorder_linear_weight``, the packing ``torch.compile`` uses for CPU linear
layers) and then multiply with ``torch.ops.mkldnn._linear_pointwise``. Measured on 2 AVX2 cores
for the embedded model's 210 decoder weights: 42 against 84 ms at M = 9, the 49k-row LM head 8
against 34 ms; the same at M = 1 (docs/PERFORMANCE.md). The sums run in another order: outputs
differ by about 1e-6 relative.

:func:`pack_language_model` turns the plain ``nn.Linear`` layers of the language model (decoder
layers and LM head) into :class:`PackedLinear`: still ``nn.Linear`` with the same parameters,
state-dict keys and tied weights, plus the packed copy (so the linear weights take twice their
memory: about 460 MB more for the embedded model in fp32). The packed copy is used only where it
equals the weight: no gradient being recorded, an fp32 CPU input, and the weight not changed in
place since packing (its version counter); anything else takes ``nn.Linear``'s own path.
Quantized layers (bitsandbytes, torchao), other dtypes and CUDA are left alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The batch size oneDNN lays the weights out for: a drafted pass is 1 + draft_tokens (8) rows.
PACKED_ROWS = 8


def packed_linear_available() -> bool:
    """Whether this torch has oneDNN's packed linear product (x86 or aarch64 builds with mkldnn)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that also holds its weight packed by oneDNN (see the module docstring).
    ``[..., in_features] -> [..., out_features]``, fp32."""

    packed_weight: torch.Tensor | None = None
    packed_version: int = -1

    def pack(self) -> None:
        """(Re)pack the current weight."""
        with torch.no_grad():
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), PACKED_ROWS)
        self.packed_version = self.weight._version

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.packed_weight is None or torch.is_grad_enabled() or x.dtype != torch.float32
                or x.device.type != "cpu" or self.weight._version != self.packed_version):
            return F.linear(x, self.weight, self.bias)
        rows = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_language_model(model: nn.Module) -> int:
    """Pack every plain fp32 CPU ``nn.Linear`` of ``model.model.layers`` and ``model.lm_head``
    (a LISA model: :class:`~lisa_ros.model.modeling.LisaForCausalLM`) in place; returns how many
    were packed (0 where oneDNN's packed product is unavailable). For inference: call it on a
    model that is not trained afterwards (training still works, through the unpacked path, but
    keeps the packed copies' memory)."""
    if not packed_linear_available():
        return 0
    candidates = [module for layer in model.model.layers for module in layer.modules()] + [model.lm_head]
    packed = 0
    for module in candidates:
        if type(module) is not nn.Linear:  # bitsandbytes' layers are subclasses: left alone
            continue
        weight = module.weight
        # plain tensors only: torchao's quantized weights are tensor subclasses (detach keeps the type)
        if type(weight.detach()) is torch.Tensor and weight.dtype == torch.float32 and weight.device.type == "cpu":
            module.__class__ = PackedLinear
            module.pack()
            packed += 1
    return packed
