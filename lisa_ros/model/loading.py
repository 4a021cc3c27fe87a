"""Loading a released (or released-layout) LISA checkpoint: folder or hub id, strictly.

docs/MODEL.md §2.5 and docs/MODEL.md §4. The LISA weights load through transformers' ``from_pretrained`` (sharded .bin
or safetensors, dtype, bitsandbytes, progress bars) into :class:`LisaForCausalLM`, whose keys are
the released ones, and loading is strict: any missing, unexpected or mis-shaped key is an error.
The CLIP vision tower comes from ``config.vision_tower`` (or an override): a hub id or a folder
holding a full ``CLIPModel`` as ``openai/clip-vit-large-patch14`` does; it is attached to the model
(not part of its state dict). Where a model comes from: :mod:`lisa_ros.model.sources`; how to
load it: :class:`~lisa_ros.model.options.LoadOptions`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lisa_ros.errors import CheckpointError, MissingDependencyError
from lisa_ros.model.configuration import LisaConfig
from lisa_ros.model.modeling import LisaForCausalLM
from lisa_ros.model.options import UNQUANTIZED_ALWAYS, UNQUANTIZED_HEADS, LoadOptions
from lisa_ros.model.packed_linear import PackedLinear
from lisa_ros.model.preprocess import CLIP_MEAN, CLIP_STD
from lisa_ros.model.quiet_imports import import_torchao_quietly
from lisa_ros.model.sources import resolve_folder
from lisa_ros.model.tokenization import LisaTokenizer, load_tokenizer

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# LLaMA widths of the released 7B and 13B models, and the CLIP patch count they were trained on.
RELEASED_HIDDEN_SIZES = (4096, 5120)
RELEASED_PATCHES = 256


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA device is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but CUDA is not available")
    return resolved


def read_config(folder: Path) -> LisaConfig:
    """The LisaConfig of a released folder; refuses folders that are not LISA checkpoints."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json")
    try:
        fields = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from exc
    if "train_mask_decoder" not in fields:
        raise CheckpointError(
            f"{folder} is not a LISA checkpoint (config.json has no train_mask_decoder: "
            "a base LLaVA must be converted by training first)")
    return LisaConfig.from_pretrained(folder)


def quantization_config(options: LoadOptions, device: torch.device | None = None):
    """The transformers quantization config for resolved ``options`` (None when not quantizing):
    a BitsAndBytesConfig, or a TorchAoConfig (:func:`torchao_config`) for the torchao backend."""
    if options.quantization == "none":
        return None
    # Full module prefixes: a bare leaf name such as "visual_model" does not match here.
    skip = UNQUANTIZED_ALWAYS + ([] if options.quantize_heads else UNQUANTIZED_HEADS)
    if options.quantization_backend == "torchao":
        return torchao_config(options.quantization, skip, device or torch.device("cpu"))
    from transformers import BitsAndBytesConfig

    compute = DTYPES[options.precision]
    if options.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute,
                                  llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


TORCHAO_INT4_GROUP_SIZE = {"cuda": 128, "cpu": 32}  # weights per int4 scale and zero point


def torchao_config(quantization: str, skip: list[str], device: torch.device):
    """transformers' TorchAoConfig: ``8bit`` = int8 weight-only (``Int8WeightOnlyConfig``, one
    scale per output channel; CUDA and CPU); ``4bit`` = int4 weight-only, on CUDA
    ``Int4WeightOnlyConfig`` in tinygemm's tile-packed layout (bf16 compute, groups of 128), on the
    CPU ``IntxWeightOnlyConfig`` (groups of 32, the int4 values stored one per byte: torchao 0.18
    has no packed int4 CPU kernel, so it saves no more memory than 8bit there). ``skip``: module
    prefixes left unquantized. Raises MissingDependencyError without torchao."""
    from transformers import TorchAoConfig

    quantization_api = import_torchao()
    if quantization == "8bit":
        quant_type = quantization_api.Int8WeightOnlyConfig()
    elif device.type == "cuda":
        quant_type = quantization_api.Int4WeightOnlyConfig(group_size=TORCHAO_INT4_GROUP_SIZE["cuda"],
                                                           int4_packing_format="tile_packed_to_4d")
    else:
        from torchao.quantization.granularity import PerGroup

        quant_type = quantization_api.IntxWeightOnlyConfig(weight_dtype=torch.int4,
                                                           granularity=PerGroup(TORCHAO_INT4_GROUP_SIZE["cpu"]))
    return TorchAoConfig(quant_type, modules_to_not_convert=list(skip))


def import_torchao():
    """``torchao.quantization`` (imported quietly); MissingDependencyError without torchao."""
    quantization_api = import_torchao_quietly()
    if quantization_api is None:
        raise MissingDependencyError("quantization_backend torchao needs torchao: pip install torchao==0.18.0")
    return quantization_api


@dataclass(frozen=True)
class ClipPreprocessing:
    """How CLIP images are prepared (``preprocessor_config.json`` of the tower's folder)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass
class LoadedLisa:
    """Everything inference needs, on one device.

    ``clip_preprocessing`` is None for a ``mm_vision_source: objects`` model (no CLIP tower);
    ``options`` are the resolved ones (``precision`` is never ``auto``)."""

    model: LisaForCausalLM
    tokenizer: LisaTokenizer
    clip_preprocessing: ClipPreprocessing | None
    device: torch.device
    dtype: torch.dtype
    options: LoadOptions
    folder: Path

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of parameters and buffers: LISA (quantized weights count as stored, oneDNN-packed
        copies of :mod:`~lisa_ros.model.packed_linear` counted too) and CLIP."""
        def size(module: torch.nn.Module) -> int:
            tensors = list(module.parameters()) + list(module.buffers())
            packed = sum(layer.weight.numel() * layer.weight.element_size() for layer in module.modules()
                         if isinstance(layer, PackedLinear) and layer.packed_weight is not None)
            return sum(stored_bytes(t) for t in tensors) + packed

        lisa = size(self.model)
        tower = self.model.vision_tower
        clip = size(tower) if tower is not None else 0
        return {"lisa": lisa, "clip": clip, "total": lisa + clip}


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds: for torchao's quantized tensor subclasses the sum of their inner
    tensors (int data, scales, zero points), not the logical shape times the dtype's size."""
    names = getattr(tensor, "tensor_data_names", None)
    if names:
        inner = [getattr(tensor, name) for name in names] + [getattr(tensor, name) for name in
                                                              getattr(tensor, "optional_tensor_data_names", ())]
        return sum(stored_bytes(t) for t in inner if isinstance(t, torch.Tensor))
    return tensor.numel() * tensor.element_size()


def load_lisa(source: str | Path, options: LoadOptions | None = None) -> LoadedLisa:
    """Load a LISA checkpoint (folder, hub id or ``embedded``) with its tokenizer and CLIP tower.

    Raises :class:`CheckpointError` (or its :class:`TokenizerError`) saying what does not fit,
    :class:`UsageError` for invalid options and :class:`MissingDependencyError` for a missing package."""
    from transformers import CLIPVisionModel

    options = options or LoadOptions()
    options.validate()
    options = options.resolved()
    device = resolve_device(options.device)
    dtype = DTYPES[options.precision]
    folder = resolve_folder(source)
    config = read_config(folder)
    tokenizer = load_tokenizer(folder)
    if len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                              f"{config.vocab_size}: tokenizer and weights do not belong together")

    log.info("loading LISA weights from %s (%s, quantization %s%s, %s)", folder, options.precision,
             options.quantization, "" if options.quantization == "none" else f" by {options.quantization_backend}", device)
    kwargs = {"dtype": dtype, "output_loading_info": True}
    quant = quantization_config(options, device)
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"})
    try:
        model, info = LisaForCausalLM.from_pretrained(folder, config=config, **kwargs)
    except Exception as exc:
        raise CheckpointError(f"cannot load the weights in {folder}: {type(exc).__name__}: {exc}") from exc
    problems = {k: sorted(v) for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        summary = "; ".join(f"{k}: {len(v)} (e.g. {', '.join(map(str, v[:3]))})" for k, v in problems.items())
        raise CheckpointError(f"{folder} does not match the LISA architecture: {summary}")
    if quant is None:
        model = model.to(device)
    model.eval()
    _restore_sam_pixel_buffers(model)
    if not config.uses_clip:  # the SAM encoder feeds the language model too: no CLIP tower
        loaded = LoadedLisa(model, tokenizer, None, device, dtype, options, folder)
        log.info("LISA ready on %s: %.1f MB of weights (no CLIP tower: SAM features feed the LLM)", device,
                 loaded.memory_bytes()["total"] / 2**20)
        return loaded

    tower_source = options.vision_tower or config.vision_tower
    tower_folder = resolve_folder(tower_source, "vision tower")
    log.info("loading the CLIP vision tower from %s", tower_folder)
    try:
        with _quiet_load_report():
            vision_tower, tower_info = CLIPVisionModel.from_pretrained(tower_folder, dtype=dtype, output_loading_info=True)
    except Exception as exc:
        raise CheckpointError(f"cannot load the CLIP vision tower from {tower_folder}: {exc}") from exc
    unexpected = tower_info.get("unexpected_keys") or []
    if unexpected:  # a full CLIPModel folder (our one line for transformers' table)
        other = sorted(key for key in unexpected if not key.startswith(CLIP_MODEL_ONLY_KEYS))
        log.info("CLIP tower: %d weights of the full CLIPModel's text tower and projection heads not needed%s",
                 len(unexpected) - len(other), f"; {len(other)} other unused weights, e.g. {other[0]}" if other else "")
    # A full CLIPModel folder has text-tower keys (unexpected here, fine); missing or mis-shaped
    # vision keys would be silently random-initialised by transformers: refuse them.
    tower_problems = {k: sorted(v) for k, v in tower_info.items() if v and k in ("missing_keys", "mismatched_keys")}
    if tower_problems:
        summary = "; ".join(f"{k}: {len(v)} (e.g. {', '.join(map(str, v[:3]))})" for k, v in tower_problems.items())
        raise CheckpointError(f"the CLIP vision tower in {tower_folder} is incomplete: {summary}")
    vision_tower = vision_tower.to(device).eval()
    check_vision_tower(config, vision_tower.config)
    model.attach_vision_tower(vision_tower)
    preprocessing = _clip_preprocessing(tower_folder, vision_tower.config.image_size)
    loaded = LoadedLisa(model, tokenizer, preprocessing, device, dtype, options, folder)
    memory = loaded.memory_bytes()
    log.info("LISA ready on %s: %.1f MB of weights (LISA %.1f MB, CLIP %.1f MB)", device,
             memory["total"] / 2**20, memory["lisa"] / 2**20, memory["clip"] / 2**20)
    return loaded


# What a full CLIPModel folder holds beyond CLIPVisionModel: the text tower and the two projection
# heads with their temperature (LLaVA takes the vision tower's hidden states, not the projections).
CLIP_MODEL_ONLY_KEYS = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


class _quiet_load_report:
    """transformers' loggers at ERROR for one load: its per-key LOAD REPORT table (40 lines of
    "UNEXPECTED" text-tower keys for a full CLIPModel folder) is summarised by the caller; what
    matters (missing or mis-shaped vision keys) is refused by the caller, not just printed."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc_info):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._verbosity)


def check_vision_tower(config: LisaConfig, tower_config) -> None:
    """Refuse a CLIP tower that does not fit the checkpoint: width, and for the released model
    sizes the 256 patches (ViT-L/14 at 224 px) they were trained on (a 336 px tower has 576)."""
    if tower_config.hidden_size != config.mm_hidden_size:
        raise CheckpointError(f"CLIP width {tower_config.hidden_size} does not match the "
                              f"projector's input {config.mm_hidden_size}: wrong vision tower")
    patches = (tower_config.image_size // tower_config.patch_size) ** 2
    if config.hidden_size in RELEASED_HIDDEN_SIZES and patches != RELEASED_PATCHES:
        raise CheckpointError(
            f"the vision tower gives {patches} patches; released LISA models were trained on "
            f"{RELEASED_PATCHES} (CLIP ViT-L/14 at 224 px, e.g. openai/clip-vit-large-patch14)")


def _restore_sam_pixel_buffers(model: LisaForCausalLM) -> None:
    """SAM's pixel_mean/pixel_std are non-persistent buffers (not in checkpoints): from_pretrained
    leaves them uninitialised. The engine normalises with the config's values itself, but the Sam
    module must not carry garbage for anyone calling its own preprocess."""
    sam_config = model.config.sam
    sam = model.model.visual_model
    with torch.no_grad():
        sam.pixel_mean.copy_(torch.tensor(sam_config.pixel_mean).view(-1, 1, 1))
        sam.pixel_std.copy_(torch.tensor(sam_config.pixel_std).view(-1, 1, 1))


def _clip_preprocessing(folder: Path, default_size: int) -> ClipPreprocessing:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return ClipPreprocessing(default_size, CLIP_MEAN, CLIP_STD)
    fields = json.loads(path.read_text())
    crop = fields.get("crop_size", default_size)
    size = crop.get("height", default_size) if isinstance(crop, dict) else int(crop)
    return ClipPreprocessing(size, tuple(fields.get("image_mean", CLIP_MEAN)), tuple(fields.get("image_std", CLIP_STD)))
