"""Write small LISA checkpoints in the released layout (for tests, benchmarks and demos).

No real weights can be downloaded on the project's machines, so the loading code is exercised on
folders this module writes exactly as the released ones are laid out (docs/MODEL.md §2):

* ``config.json`` with ``architectures: ["LISAForCausalLM"]``, ``model_type: "llava"``, the LLaMA
  fields, ``train_mask_decoder``, ``out_dim`` and the ``mm_*`` fields;
* sharded ``pytorch_model-0000k-of-0000n.bin`` plus ``pytorch_model.bin.index.json`` (no CLIP
  keys: released checkpoints drop them);
* the slow LLaMA tokenizer files: ``tokenizer.model`` (a SentencePiece BPE model trained here),
  ``tokenizer_config.json``, ``special_tokens_map.json``, ``added_tokens.json`` with the added
  tokens at the released ids' pattern (7B: ``<im_patch>``, ``<im_start>``, ``<im_end>``, ``[SEG]``;
  13B-llama2: ``[SEG]``, ``<im_start>``, ``<im_end>``);
* a separate CLIP folder in the hub's layout: a full ``CLIPModel`` (text and vision towers, vision
  weights under ``vision_model.``) with its ``preprocessor_config.json``.

The weights are random: such a model runs every code path with the real shapes of a small LISA,
but its answers are meaningless.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import torch

from lisa_ros.model.configuration import LisaConfig
from lisa_ros.model.released_layout import save_released_checkpoint
from lisa_ros.model.modeling import LisaForCausalLM
from lisa_ros.model.prompts import SYSTEM_PROMPT
from lisa_ros.model.sam import SamConfig
from lisa_ros.model.tokenization import IM_END_TOKEN, IM_PATCH_TOKEN, IM_START_TOKEN, SEG_TOKEN

TINY_SAM = SamConfig(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                     encoder_global_attn_indexes=[1], window_size=4, image_size=256,
                     decoder_mlp_dim=64)

_CORPUS = [
    SYSTEM_PROMPT,
    "USER: ASSISTANT: Sure, it is. It is. Sure, the segmentation result is.",
    "Can you segment the object in this image? Please segment the cup in this image.",
    "What is the ladder in this image? Please respond with segmentation mask.",
    "Please output segmentation mask and explain why. Please output segmentation mask.",
    "What should I use to reach the shelf? The step ladder is tall enough to stand on.",
    "the red box, the blue cup, a chair, the table, the door handle, left, right, because.",
]


def write_sentencepiece_model(path: Path, vocab_size: int = 384) -> None:
    """Train a small LLaMA-style SentencePiece model (BPE, byte fallback, <unk>/<s>/</s> = 0/1/2)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 20), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        split_digits=True, character_coverage=1.0, minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def write_tokenizer_files(folder: Path, layout: str = "7b", vocab_size: int = 384) -> dict[str, int]:
    """The released slow-tokenizer files; returns the added tokens and their ids."""
    folder.mkdir(parents=True, exist_ok=True)
    write_sentencepiece_model(folder / "tokenizer.model", vocab_size)
    base = vocab_size
    if layout == "7b":  # LLaVA-7B already had <im_patch> at 32000; LISA added [SEG] last
        added = {IM_PATCH_TOKEN: base, IM_START_TOKEN: base + 1, IM_END_TOKEN: base + 2, SEG_TOKEN: base + 3}
    elif layout == "13b":  # the LLaMA-2 base had none: [SEG] first
        added = {SEG_TOKEN: base, IM_START_TOKEN: base + 1, IM_END_TOKEN: base + 2}
    else:
        raise ValueError(f"layout must be '7b' or '13b', got {layout!r}")
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": True, "model_max_length": 512,
        "padding_side": "right", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "clean_up_tokenization_spaces": False, "sp_model_kwargs": {},
    }, indent=2))
    return added


def write_tiny_clip_folder(folder: Path, image_size: int = 56, patch_size: int = 14,
                           hidden_size: int = 32, seed: int = 0, num_layers: int = 3, num_heads: int = 2,
                           intermediate_size: int | None = None) -> Path:
    """A full random ``CLIPModel`` (text + vision) folder with its preprocessor config (the
    vision tower: ``num_layers`` x ``hidden_size``, ``intermediate_size`` default 2x)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                         num_attention_heads=2, vocab_size=128, max_position_embeddings=16,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=hidden_size, intermediate_size=intermediate_size or 2 * hidden_size,
                           num_hidden_layers=num_layers, num_attention_heads=num_heads, image_size=image_size,
                           patch_size=patch_size),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        resample=3, do_center_crop=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    ).save_pretrained(folder)
    return folder


def write_tiny_lisa_checkpoint(
    folder: str | Path,
    vision_tower: str | Path | None = None,
    layout: str = "7b",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    sam: SamConfig = TINY_SAM,
    clip_hidden_size: int = 32,
    clip_image_size: int = 56,
    clip_patch_size: int = 14,
    shards: int = 2,
    seed: int = 0,
    vocab_size: int = 384,
    emit_seg: bool = False,
    intermediate_size: int | None = None,
    clip_layers: int = 3,
    clip_heads: int = 2,
    clip_intermediate_size: int | None = None,
    dtype: torch.dtype | None = None,
    init_device: str = "cpu",
) -> Path:
    """Write a random LISA checkpoint folder in the released layout; returns the folder.

    ``vision_tower``: the CLIP folder to record in config.json; by default a tiny one is written
    to ``<folder>/../<name>-clip``. ``emit_seg``: edit ``lm_head`` so that greedy decoding says
    ``[SEG]`` where the random model would say its most frequent word (see
    :func:`make_seg_frequent`), so masks come out of every question. ``intermediate_size``: the
    MLP width (default 2x hidden). ``dtype``: the stored dtype (default fp32, as initialised).
    ``init_device``: where the random model is initialised ("cuda" makes a 7B-sized one in seconds).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if vision_tower is None:
        vision_tower = write_tiny_clip_folder(folder.parent / f"{folder.name}-clip", image_size=clip_image_size,
                                              patch_size=clip_patch_size, hidden_size=clip_hidden_size, seed=seed,
                                              num_layers=clip_layers, num_heads=clip_heads,
                                              intermediate_size=clip_intermediate_size)
    added = write_tokenizer_files(folder, layout, vocab_size)
    total_vocab = max(added.values()) + 1
    config = LisaConfig(
        vocab_size=total_vocab, hidden_size=hidden_size, intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=512, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        vision_tower=str(vision_tower), mm_vision_tower=str(vision_tower), mm_hidden_size=clip_hidden_size,
        use_cache=False, architectures=["LISAForCausalLM"],
    )
    config.set_sam(sam)
    torch.manual_seed(seed)
    with torch.device(init_device):
        model = LisaForCausalLM(config).eval()
    # Random init leaves the decoder's output near zero everywhere; spread the [SEG] projection so
    # masks of a random model are not all empty (nothing else depends on this).
    with torch.no_grad():
        model.model.text_hidden_fcs[0][2].weight.mul_(20.0)

    weight_map = save_released_checkpoint(model, folder, shards=shards, dtype=dtype, extra_config={"sam_config": asdict(sam)})
    del model
    if emit_seg:
        make_seg_frequent(folder, weight_map["lm_head.weight"])
    return folder


def make_seg_frequent(folder: Path, shard_name: str) -> None:
    """Give ``[SEG]`` the ``lm_head`` row of the random model's favourite tokens, scaled up.

    A random LISA never chooses ``[SEG]``; after this, greedy decoding says ``[SEG]`` wherever it
    would have said one of the two tokens it generates most often across a few questions and
    images. The folder stays a valid released-layout checkpoint.
    """
    import collections

    import numpy as np

    from lisa_ros.engine import GenerationOptions, LisaEngine
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions

    loaded = load_lisa(folder, LoadOptions(precision="fp32", device="cpu"))
    engine = LisaEngine(loaded, GenerationOptions(max_new_tokens=16, stop_after_seg=False))
    counts: collections.Counter = collections.Counter()
    rng = np.random.default_rng(0)
    for command in ("where is the cup?", "what should I use to reach the shelf?", "segment the door"):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        answer, _ = engine.answer(image, command)
        counts.update(t for t in answer.token_ids if t != loaded.tokenizer.eos_token_id)
    favourites = [token for token, _ in counts.most_common(2)]
    shard = folder / shard_name
    state = torch.load(shard)
    weight = state["lm_head.weight"]
    weight[loaded.tokenizer.seg_token_id] = weight[favourites].sum(dim=0) * 1.5
    torch.save(state, shard)


def model_or_tiny(model: str | None, folder: str | Path) -> str:
    """``model``, or when it is None a tiny released-layout checkpoint that says [SEG] often,
    written into ``folder`` (the benchmarks' default model)."""
    if model is not None:
        return model
    return str(write_tiny_lisa_checkpoint(Path(folder) / "lisa", emit_seg=True))
