"""Build a LISA starting point from a base LLaVA (v1) folder and a SAM checkpoint (docs/MODEL.md §5.1).

The official training builds LISA inside the model constructor from a LLaVA checkpoint plus
``sam_vit_h_4b8939.pth``. Here that is an explicit conversion step producing a released-layout
folder (which the loader reads strictly and the trainer starts from):

1. tokenizer: ``[SEG]`` is added first, then ``<im_start>``/``<im_end>`` when the base lacks them
   (the LLaVA-7B base already has ``<im_patch>``, ``<im_start>``, ``<im_end>`` at 32000-32002, so
   ``[SEG]`` gets 32003; the LLaMA-2 base has none, so ``[SEG]`` gets 32000, as in the releases);
2. the LLaVA weights load into :class:`LisaForCausalLM`; the embedding and LM-head rows of new
   tokens are initialised normal(0, 0.02), as transformers' ``resize_token_embeddings`` did;
3. SAM loads strictly from the ``.pth``; ``text_hidden_fcs`` gets PyTorch's default init;
4. CLIP tower keys of the base are dropped (released checkpoints never hold them).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import torch

from lisa_ros.model.configuration import LisaConfig
from lisa_ros.model.released_layout import TOKENIZER_FILES, save_released_checkpoint
from lisa_ros.model.sam import SamConfig
from lisa_ros.model.tokenization import IM_END_TOKEN, IM_START_TOKEN, SEG_TOKEN, LisaTokenizer


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers folder: sharded or single ``.bin`` or ``.safetensors``."""
    for index_name, loader in (("model.safetensors.index.json", "safetensors"), ("pytorch_model.bin.index.json", "bin")):
        index = folder / index_name
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            break
    else:
        single = [name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()]
        if not single:
            raise FileNotFoundError(f"{folder} holds no model weights")
        files, loader = single[:1], "safetensors" if single[0].endswith(".safetensors") else "bin"
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if loader == "safetensors":
            from safetensors.torch import load_file

            state.update(load_file(folder / name))
        else:
            state.update(torch.load(folder / name, map_location="cpu", weights_only=True))
    return state


def infer_sam_config(state: dict[str, torch.Tensor]) -> SamConfig:
    """SAM's shapes read off its checkpoint (ViT-H, -L, -B or a smaller one)."""
    embed = state["image_encoder.patch_embed.proj.weight"]
    patch = embed.shape[-1]
    grid = state["image_encoder.pos_embed"].shape[1]
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks."))
    rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape for i in range(depth)]
    head_dim = rel[0][1]
    global_blocks = [i for i, shape in enumerate(rel) if shape[0] == 2 * grid - 1]
    windowed = [shape[0] for i, shape in enumerate(rel) if i not in global_blocks]
    return SamConfig(
        encoder_embed_dim=embed.shape[0], encoder_depth=depth, encoder_num_heads=embed.shape[0] // head_dim,
        encoder_global_attn_indexes=global_blocks, window_size=(windowed[0] + 1) // 2 if windowed else 14,
        patch_size=patch, image_size=grid * patch, prompt_dim=state["prompt_encoder.no_mask_embed.weight"].shape[1],
        decoder_mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0])


def build_from_llava(llava: str | Path, sam_checkpoint: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write a LISA starting point (released layout) from a base LLaVA folder and SAM weights."""
    from lisa_ros.model.modeling import LisaForCausalLM

    llava, out = Path(llava), Path(out)
    config_fields = json.loads((llava / "config.json").read_text())
    if "train_mask_decoder" in config_fields:
        raise ValueError(f"{llava} is already a LISA checkpoint: use it as `model` directly")
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (llava / name).is_file():
            shutil.copy2(llava / name, out / name)
    base_tokenizer = LisaTokenizer(out / "tokenizer.model", _added(out))
    added = dict(base_tokenizer.added_tokens)
    next_id = len(base_tokenizer)
    for token in (SEG_TOKEN, IM_START_TOKEN, IM_END_TOKEN):
        if token not in added:
            added[token], next_id = next_id, next_id + 1
    (out / "added_tokens.json").write_text(json.dumps(added, indent=2))
    vocab = max(added.values()) + 1

    sam_state = torch.load(sam_checkpoint, map_location="cpu", weights_only=True)
    sam = infer_sam_config(sam_state)
    allowed = {f.name for f in fields(SamConfig)}
    config = LisaConfig(**{k: v for k, v in config_fields.items() if k not in ("architectures", "model_type")})
    config.vocab_size, config.train_mask_decoder, config.out_dim = vocab, True, sam.prompt_dim
    if sam != SamConfig.vit_h():
        config.sam_config = {k: v for k, v in vars(sam).items() if k in allowed}
    torch.manual_seed(seed)
    model = LisaForCausalLM(config)

    state = {k: v for k, v in read_state_dict(llava).items() if "vision_tower" not in k}
    with torch.no_grad():
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            old = state.pop(key)
            new = torch.empty(vocab, old.shape[1]).normal_(0.0, 0.02)
            new[: old.shape[0]] = old
            state[key] = new
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected_missing = [k for k in missing if k.startswith(("model.visual_model.", "model.text_hidden_fcs."))]
    if unexpected or len(expected_missing) != len(missing):
        raise ValueError(f"{llava} is not a LLaVA v1 checkpoint: unexpected {unexpected[:3]}, "
                         f"missing {[k for k in missing if k not in expected_missing][:3]}")
    model.model.visual_model.load_state_dict(sam_state, strict=True)
    extra = {"sam_config": config.sam_config} if config.sam_config else {}
    save_released_checkpoint(model, out, shards=2, extra_config=extra)
    return out


def _added(folder: Path) -> dict[str, int]:
    path = folder / "added_tokens.json"
    return json.loads(path.read_text()) if path.is_file() else {}
