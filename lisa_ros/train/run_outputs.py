"""What a finished training run produces: a merged released-layout folder, or the compact delta.

* :func:`export_merged`: the merge script's equivalent (docs/MODEL.md §7.3), a folder the loader reads strictly;
* :func:`extract_delta`: the embedded model's committed file (:mod:`lisa_ros.model.delta`), from a
  run's ``checkpoint.pt`` (``lisa-ros embedded extract RUN_DIR``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from lisa_ros.errors import CheckpointError
from lisa_ros.model.delta import DELTA_FILE, delta_from_trainable, write_delta
from lisa_ros.model.released_layout import copy_tokenizer, save_released_checkpoint
from lisa_ros.model.loading import load_lisa
from lisa_ros.model.options import LoadOptions
from lisa_ros.model.sources import resolve_folder
from lisa_ros.model.tokenization import load_tokenizer
from lisa_ros.train.config import TrainConfig, add_lora


def export_merged(config: TrainConfig, trained: dict[str, torch.Tensor], folder: Path) -> Path:
    """The merge script's equivalent (docs/MODEL.md §7.3): base in full precision + LoRA config + trained
    weights -> merge_and_unload -> released layout with the tokenizer. Works for QLoRA runs too,
    since the base is reloaded unquantized here."""
    base = load_lisa(config.model, LoadOptions(precision="fp32", device="cpu", vision_tower=config.vision_tower))
    model = add_lora(base.model, config)
    parameters = dict(model.named_parameters())
    unknown = [name for name in trained if name not in parameters]
    if unknown:
        raise CheckpointError(f"trained weights do not fit the model: {unknown[:3]}")
    with torch.no_grad():
        for name, value in trained.items():
            parameters[name].copy_(value.to(parameters[name].dtype))
    merged = model.merge_and_unload()
    extra = {"sam_config": base.model.config.sam_config} if base.model.config.sam_config else {}
    extra["vision_tower"] = extra["mm_vision_tower"] = base.model.config.vision_tower
    save_released_checkpoint(merged, folder, shards=2, extra_config=extra)
    copy_tokenizer(base.folder, folder)
    return folder


def extract_delta(run_dir: str | Path, out_file: str | Path = DELTA_FILE) -> Path:
    """Write the delta of a ``lisa-ros train`` run (its ``checkpoint.pt``): LoRA factors, the added
    tokens' rows and the fully trained modules, fp16."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        raise CheckpointError(f"{run_dir} holds no checkpoint.pt (is it a lisa-ros train output_dir?)")
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    config = state["config"]
    tokenizer = load_tokenizer(resolve_folder(config["model"]))  # the run's base: embedded-base, a folder...
    rows = sorted(tokenizer.added_tokens.values())
    tensors, metadata = delta_from_trainable(state["trainable"], config["lora_alpha"] / config["lora_r"], rows)
    metadata["trained_steps"] = str(state["step"])
    return write_delta(out_file, tensors, metadata)
