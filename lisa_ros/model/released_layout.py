"""Writing a model in the released LISA layout (what the loader reads strictly).

``config.json`` with the official fields, sharded ``pytorch_model-0000k-of-0000n.bin`` plus
``pytorch_model.bin.index.json``, no CLIP tower keys. Used by training's export (the equivalent of
the official merge script) and by the tiny test checkpoints.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

# The LLaVA/LISA fields every released config.json carries besides the LLaMA ones (docs/MODEL.md §2.3).
RELEASED_FIELDS = {
    "architectures": ["LISAForCausalLM"], "model_type": "llava", "train_mask_decoder": True,
    "mm_use_im_start_end": True, "mm_use_im_patch_token": False, "image_aspect_ratio": "square",
    "image_grid_pinpoints": None, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": True,
    "pretrain_mm_mlp_adapter": None, "use_cache": False,
}
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "added_tokens.json", "special_tokens_map.json",
                   "tokenizer_config.json")


def save_released_checkpoint(model, folder: str | Path, shards: int = 2, dtype: torch.dtype | None = None,
                             extra_config: dict | None = None) -> dict[str, str]:
    """Write ``model`` (a LisaForCausalLM) as a released-layout folder; returns the weight map."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items() if "vision_tower" not in k}
    keys = list(state)
    per_shard = -(-len(keys) // max(1, shards))
    count = -(-len(keys) // per_shard)
    weight_map, total_size = {}, 0
    for index in range(count):
        name = f"pytorch_model-{index + 1:05d}-of-{count:05d}.bin"
        chunk = {k: state[k] for k in keys[index * per_shard:(index + 1) * per_shard]}
        torch.save(chunk, folder / name)
        for key, tensor in chunk.items():
            weight_map[key] = name
            total_size += tensor.numel() * tensor.element_size()
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=2))
    fields = model.config.to_dict()
    fields.update(RELEASED_FIELDS)
    fields["out_dim"] = model.config.out_dim
    fields["torch_dtype"] = str(dtype or next(iter(state.values())).dtype).replace("torch.", "")
    fields.update(extra_config or {})
    (folder / "config.json").write_text(json.dumps(fields, indent=2, default=str))
    return weight_map


def copy_tokenizer(source: str | Path, folder: str | Path) -> None:
    """Copy the tokenizer files of a checkpoint folder (SentencePiece or byte-level BPE)."""
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, Path(folder) / name)
