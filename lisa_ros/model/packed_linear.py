"""The language model's linear layers with weights pre-packed by oneDNN, for fp32 inference on the CPU.

A forward pass over a few tokens (a drafted pass checks 1 + 8, :mod:`lisa_ros.drafting`) multiplies
``[M, in]`` by each ``[out, in]`` weight with M small. torch's default fp32 product lays the weight
out again for every such call; oneDNN can lay it out once (``torch.ops.mkldnn._reorder_linear_weight``)
and then multiply with ``torch.ops.mkldnn._linear_pointwise`` (the pair torch.compile uses for CPU
linear layers in some configurations). Measured on 2 AVX2 cores for the embedded model's 210
decoder weights: 42 against 84 ms at M = 9, the 49k-row LM head 8 against 34 ms; the same at M = 1
(docs/PERFORMANCE.md). The sums run in another order: outputs differ by about 1e-6 relative.

:func:`pack_language_model` turns the plain ``nn.Linear`` layers of the language model (decoder
layers and LM head) into :class:`PackedLinear`: still ``nn.Linear`` with the same parameters,
state-dict keys and tied weights, plus the packed copy, so the linear weights take twice their
memory (about 540 MB more for the embedded model in fp32; :meth:`LoadedLisa.memory_bytes` counts
it). The packed copy is used only without gradients or autocast, for an fp32 CPU input, and while
the weight is the same tensor, at the same address, not changed in place through autograd's
view of it (its version counter); anything else takes ``nn.Linear``'s own path. An edit through
``weight.data`` (peft's LoRA merge does that) is not seen: call :func:`unpack_language_model`
before merging adapters or editing weights, and before copying or saving the whole module (the
packed copy is an opaque oneDNN tensor). Only on x86-64, where it was measured; a quantized
language model (bitsandbytes, torchao), other dtypes and CUDA are left alone, and a layer oneDNN
cannot pack stays as it was.
"""
from __future__ import annotations

import platform
import weakref

import torch
import torch.nn.functional as F
from torch import nn

# The rows oneDNN lays the weights out for. A drafted pass has 1 to 1 + draft_tokens rows (9 by
# default), the prefill a few dozen; packing for 8 was the fastest over 1-32 rows measured.
PACKED_ROWS = 8


def packed_linear_available() -> bool:
    """Whether to pack here: an x86-64 CPU (where it was measured) and a torch with oneDNN
    enabled and its packed linear product."""
    return (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that also holds its weight packed by oneDNN (see the module docstring).
    ``[..., in_features] -> [..., out_features]``, fp32."""

    packed_weight: torch.Tensor | None = None
    # What was packed: (weak reference to the weight, its data pointer, its version counter).
    packed_from: tuple | None = None

    def pack(self) -> None:
        """(Re)pack the current weight. Raises RuntimeError where oneDNN cannot (e.g. a weight
        made under ``torch.inference_mode``, which keeps no version counter)."""
        weight = self.weight
        with torch.no_grad():
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKED_ROWS)
        self.packed_from = (weakref.ref(weight), weight.data_ptr(), weight._version)

    def packed_is_current(self) -> bool:
        """Whether the packed copy still equals the weight (see the module docstring for the one
        change it cannot see)."""
        if self.packed_weight is None or self.packed_from is None:
            return False
        weight, (reference, address, version) = self.weight, self.packed_from
        return (reference() is weight and weight.data_ptr() == address and weight._version == version
                and weight.dtype == torch.float32 and weight.device.type == "cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu"
                or torch.is_autocast_enabled("cpu") or not self.packed_is_current()):
            return F.linear(x, self.weight, self.bias)
        rows = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_language_model(model: nn.Module) -> int:
    """Pack every plain fp32 CPU ``nn.Linear`` of ``model.model.layers`` and ``model.lm_head``
    (a LISA model: :class:`~lisa_ros.model.modeling.LisaForCausalLM`) in place; returns how many
    were packed: 0 where oneDNN's packed product is unavailable, and 0 for a model whose language
    model is quantized (quantizing is chosen to save memory; the packed copies would add to it).
    For inference: call it on a model that is not trained afterwards (training still works,
    through the unpacked path, but keeps the packed copies' memory)."""
    if not packed_linear_available():
        return 0
    candidates = [module for layer in model.model.layers for module in layer.modules()] + [model.lm_head]
    if any(_is_quantized(module) for module in candidates):
        return 0
    packed = 0
    for module in candidates:
        if type(module) is nn.Linear and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu":
            module.__class__ = PackedLinear
            try:
                module.pack()
            except (RuntimeError, NotImplementedError):
                unpack(module)
                continue
            packed += 1
    return packed


def _is_quantized(module: nn.Module) -> bool:
    """A bitsandbytes layer (an ``nn.Linear`` subclass) or one holding a torchao tensor subclass."""
    if not isinstance(module, nn.Linear) or isinstance(module, PackedLinear):
        return False
    return type(module) is not nn.Linear or type(module.weight.detach()) is not torch.Tensor


def unpack(module: PackedLinear) -> None:
    """Make ``module`` a plain ``nn.Linear`` again, dropping its packed copy."""
    module.__dict__.pop("packed_weight", None)
    module.__dict__.pop("packed_from", None)
    module.__class__ = nn.Linear


def unpack_language_model(model: nn.Module) -> int:
    """Undo :func:`pack_language_model` (before merging adapters, editing weights through
    ``.data``, copying or saving the whole module); returns how many layers were unpacked."""
    layers = [module for module in model.modules() if isinstance(module, PackedLinear)]
    for module in layers:
        unpack(module)
    return len(layers)
