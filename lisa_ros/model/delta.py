"""The trained delta of the embedded model: what training changed, small enough to commit.

A delta is one safetensors file (fp16) whose keys say how each entry applies to a base state dict:

* ``lora.<module>.A`` / ``lora.<module>.B``: a LoRA pair, merged as ``W += scale * B @ A``;
* ``rows.<name>``: the rows ``rows`` (the added tokens) of ``model.embed_tokens.weight`` or
  ``lm_head.weight``;
* ``full.<name>``: a tensor stored whole (the projector, ``text_hidden_fcs``, decoder parts).

Metadata: ``lora_scale`` (alpha / r), ``rows`` (JSON list of token ids) and, from training,
``trained_steps``, or for an average of two deltas (:func:`average_deltas`) ``averaged``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lisa_ros.errors import CheckpointError

DELTA_FILE = Path(__file__).resolve().parent.parent / "assets" / "embedded_delta.safetensors"
_PEFT_PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.default\.weight$")
ROW_PARAMETERS = ("model.embed_tokens.weight", "lm_head.weight")


def delta_from_trainable(trainable: dict[str, torch.Tensor], lora_scale: float, rows: list[int]) -> tuple[dict, dict]:
    """A training run's trainable parameters (peft names) -> the delta (tensors, metadata).

    LoRA pairs stay factorised, embedding and head keep only ``rows``, everything else is stored
    whole; all fp16.
    """
    tensors = {}
    for name, value in trainable.items():
        name = name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name
        match = _LORA.match(name)
        if match:
            tensors[f"lora.{match['module']}.{match['which']}"] = value
        elif name in ROW_PARAMETERS:
            tensors[f"rows.{name}"] = value[rows]
        else:
            tensors[f"full.{name}"] = value
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    return tensors, {"lora_scale": str(lora_scale), "rows": json.dumps(rows)}


def apply_delta(state: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Merge a delta into a base state dict in place (W += scale * B @ A, rows and wholes replaced).

    Raises :class:`CheckpointError` for an entry that does not fit the base."""
    scale, rows = float(metadata["lora_scale"]), json.loads(metadata["rows"])
    for key, value in tensors.items():
        kind, name = key.split(".", 1)
        if kind == "lora":
            if not name.endswith(".A"):
                continue
            module = name[:-2]
            target = state[f"{module}.weight"]
            update = tensors[f"lora.{module}.B"].float() @ value.float()
            state[f"{module}.weight"] = (target.float() + scale * update).to(target.dtype)
        elif kind == "rows":
            target = state[name].clone()
            target[rows] = value.to(target.dtype)
            state[name] = target
        elif kind == "full":
            if state[name].shape != value.shape:
                raise CheckpointError(f"delta {key} has shape {tuple(value.shape)}, the model {tuple(state[name].shape)}")
            state[name] = value.to(state[name].dtype)
        else:
            raise CheckpointError(f"unknown delta entry {key}")


def trainable_from_delta(tensors: dict[str, torch.Tensor], metadata: dict, lora_scale: float,
                         parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`delta_from_trainable`: a delta -> the values of a training model's
    parameters (peft names, e.g. ``base_model.model.<module>.lora_A.default.weight``), so that a
    run can start from a shipped delta.

    ``parameters``: the training model's named parameters (their current values fill the rows a
    delta does not store). Raises :class:`CheckpointError` when the run's LoRA scale (alpha / r)
    differs from the delta's, or an entry names no parameter of the model or has another shape.
    """
    if abs(float(metadata["lora_scale"]) - lora_scale) > 1e-6:
        raise CheckpointError(f"the delta's LoRA scale is {metadata['lora_scale']}, the run's {lora_scale} (lora_alpha / lora_r)")
    rows = json.loads(metadata["rows"])
    values = {}
    for key, value in tensors.items():
        kind, name = key.split(".", 1)
        if kind == "lora":
            name = f"{name[:-2]}.lora_{name[-1]}.default.weight"
        elif kind not in ("rows", "full"):
            raise CheckpointError(f"unknown delta entry {key}")
        name = _PEFT_PREFIX + name
        if name not in parameters:
            raise CheckpointError(f"delta entry {key} names no trainable parameter of this model ({name})")
        if kind == "rows":
            full = parameters[name].detach().cpu().float().clone()
            full[rows] = value.float()
            value = full
        if tuple(value.shape) != tuple(parameters[name].shape):
            raise CheckpointError(f"delta {key} has shape {tuple(value.shape)}, the model {tuple(parameters[name].shape)}")
        values[name] = value.float()
    return values


def average_deltas(first: tuple[dict, dict], second: tuple[dict, dict], weight: float) -> tuple[dict, dict]:
    """``(1 - weight) * first + weight * second``, entry by entry, of two deltas (tensors, metadata)
    of one base and one layout: a weight average of two runs where the second was trained on from
    the first (``init_from`` the first's delta, LoRA included: "model soup", Wortsman et al.,
    2022). A LoRA pair's two factors are each averaged, as the runs' own parameters; the merged
    update is then the average of the two runs' updates up to ``w (1 - w) dB dA`` (small when
    the second run moved the factors little). Two runs whose LoRA factors started apart pass
    these checks but do not average meaningfully. The result is fp16, with the first's
    ``lora_scale`` and ``rows`` and ``averaged`` in its metadata saying what was averaged (the
    inputs' own ``averaged`` entries kept within it).
    Raises :class:`CheckpointError` when the two differ in keys, shapes, ``lora_scale`` or ``rows``,
    and ValueError for a weight outside [0, 1]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight {weight} is outside [0, 1]")
    (tensors_a, meta_a), (tensors_b, meta_b) = first, second
    if set(tensors_a) != set(tensors_b):
        raise CheckpointError(f"the deltas hold other entries: {sorted(set(tensors_a) ^ set(tensors_b))[:5]}")
    for field in ("lora_scale", "rows"):
        if meta_a.get(field) != meta_b.get(field):
            raise CheckpointError(f"the deltas differ in {field}: {meta_a.get(field)} and {meta_b.get(field)}")
    averaged = {}
    for key, value in tensors_a.items():
        other = tensors_b[key]
        if value.shape != other.shape:
            raise CheckpointError(f"{key} has shape {tuple(value.shape)} in one delta, {tuple(other.shape)} in the other")
        averaged[key] = ((1 - weight) * value.float() + weight * other.float()).to(torch.float16).contiguous()
    metadata = {"lora_scale": meta_a["lora_scale"], "rows": meta_a["rows"],
                "averaged": json.dumps({"weight_of_second": weight, "first_trained_steps": meta_a.get("trained_steps"),
                                        "second_trained_steps": meta_b.get("trained_steps"),
                                        "first_averaged": json.loads(meta_a.get("averaged", "null")),
                                        "second_averaged": json.loads(meta_b.get("averaged", "null"))})}
    return averaged, metadata


def write_delta(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_delta(path: str | Path = DELTA_FILE) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a delta file; :class:`CheckpointError` when it is missing."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"the trained weights {path} are missing from the installation")
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()
