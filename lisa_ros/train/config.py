"""A training run's configuration (``lisa-ros train CONFIG.yaml``) and the LoRA wrapping it asks for.

What trains by default (docs/MODEL.md §5.1): LoRA (r 8, alpha 16, dropout 0.05) on the language model's
``q_proj`` and ``v_proj`` only, plus all of ``embed_tokens`` and ``lm_head``, the SAM mask decoder
and ``text_hidden_fcs``; ``lora_target``, ``trainable`` and ``embedding_rows`` widen or narrow that.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from lisa_ros.errors import UsageError
from lisa_ros.train.losses import LossWeights

# The LLaMA attention projections, and nothing else (SAM and CLIP also have q_proj/v_proj).
LORA_TARGET = r"model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"
TRAINABLE_NAMES = ("lm_head", "embed_tokens", "mask_decoder", "text_hidden_fcs")


@dataclass
class TrainConfig:
    """``lisa-ros train CONFIG.yaml``; see examples/train_robot.yaml for a commented example."""

    data: list[dict]  # [{"type": "reasonseg" | "robot", "path": ...}]
    output_dir: str
    model: str | None = None  # a released LISA checkpoint (folder or hub id) ...
    base_llava: str | None = None  # ... or a base LLaVA v1 folder plus SAM weights (see from_llava.py)
    sam_checkpoint: str | None = None
    vision_tower: str | None = None
    eval_data: dict | None = None  # {"type": "reasonseg", "path": ...}
    steps: int = 500
    batch_size: int = 2
    grad_accumulation: int = 10
    lr: float = 3e-4
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    clip_grad: float = 1.0
    eval_every: int = 0  # optimizer steps; 0 = only at the end when eval_data is given
    save_every: int = 50
    log_every: int = 1
    precision: str = "bf16"  # bf16 | fp32 (compute; QLoRA keeps the base in 4 bit)
    qlora: bool = False
    gradient_checkpointing: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    loss_weights: dict = field(default_factory=lambda: asdict(LossWeights()))
    explanatory: float = 0.0  # share of samples trained with their explanation (when they have one)
    device: str = "auto"
    seed: int = 0
    resume: bool = True
    export: bool = True
    lora_target: str | None = None  # regex over full module names; None = the LLM's q/v (LORA_TARGET)
    trainable: list[str] | None = None  # name parts trained in full; None = TRAINABLE_NAMES
    embedding_rows: str = "all"  # all | added: train only the added tokens' rows of embed_tokens/lm_head
    stop_at: int | None = None  # end the run at this step; the learning-rate schedule still spans `steps`
    frame_cache: str | None = None  # folder: encode every image once up front and keep it on disk
    decoder_warmup_steps: int = 0  # teach the mask decoder one-point prompts first (point_prompts.py)
    decoder_warmup_lr: float = 3e-4
    decoder_warmup_noise: float = 0.1  # std of the noise added to the point token during the warm-up
    decoder_warmup_images: int = 0  # warm up on the first N training images only (0 = all): their SAM embeddings stay in memory
    object_encoder_epochs: int = 0  # an `objects` model: train its object encoder first (train/object_encoder.py)
    object_encoder_lr: float = 2e-3
    alignment: float = 0.0  # share of training conversations replaced by alignment questions (data/scenes/questions.py)
    # Share of batch rows drawn from the "nothing fits" samples (answers without [SEG], issue 12 item 6);
    # 0 = draw uniformly from all samples (their share of the data, about 10 % of generated scenes).
    nothing_fits_share: float = 0.0
    # Share of conversations whose command is replaced by one in a structure from the command
    # grammar (data/scenes/framing.py), for samples whose type has target phrases and whose
    # annotation stores its slots.
    framed_commands: float = 0.0
    # Relative weights of query types when drawing ordinary samples ({"refer_position": 2.0}); a
    # type not named weighs 1. Empty: uniform over the samples.
    query_type_weights: dict = field(default_factory=dict)
    # Start from another run's finished stages: the trainable weights of that run's checkpoint.pt,
    # or of a delta file (*.safetensors, e.g. the shipped embedded delta), whose names contain one
    # of `init_parts` (e.g. its object encoder and decoder warm-up; [""] = every weight).
    init_from: str | None = None
    init_parts: list[str] = field(default_factory=lambda: ["mm_object_encoder", "mask_decoder"])
    # Train these finished stages again on this run's data, starting from `init_from`'s weights
    # (fine-tuning, e.g. on new kinds of images): "objects" (object_encoder_epochs more epochs)
    # and/or "decoder" (decoder_warmup_steps more warm-up steps).
    retrain: list[str] = field(default_factory=list)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        values = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise UsageError(f"{path}: unknown keys {sorted(unknown)}")
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if bool(self.model) == bool(self.base_llava):
            raise UsageError("give either `model` (a LISA checkpoint) or `base_llava` with `sam_checkpoint`")
        if self.base_llava and not self.sam_checkpoint:
            raise UsageError("`base_llava` needs `sam_checkpoint` (e.g. sam_vit_h_4b8939.pth)")
        if not self.data:
            raise UsageError("`data` lists no dataset")
        if self.embedding_rows not in ("all", "added"):
            raise UsageError("`embedding_rows` must be all or added")
        if not 0.0 <= self.framed_commands <= 1.0:
            raise UsageError("`framed_commands` must be in [0, 1]")
        if any(not isinstance(w, (int, float)) or w < 0 for w in self.query_type_weights.values()):
            raise UsageError("`query_type_weights` must map query types to weights >= 0")
        if not 0.0 <= self.nothing_fits_share < 1.0:
            raise UsageError("`nothing_fits_share` must be in [0, 1)")
        if self.retrain and not self.init_from:
            raise UsageError("`retrain` fine-tunes the stages `init_from` finished: give `init_from`")
        unknown = set(self.retrain) - {"objects", "decoder"}
        if unknown:
            raise UsageError(f"`retrain` takes objects and/or decoder, not {sorted(unknown)}")
        if "objects" in self.retrain and not self.object_encoder_epochs:
            raise UsageError("`retrain: [objects]` needs object_encoder_epochs > 0")
        if "decoder" in self.retrain and not self.decoder_warmup_steps:
            raise UsageError("`retrain: [decoder]` needs decoder_warmup_steps > 0")


def add_lora(model, config: TrainConfig):
    """Wrap with LoRA on the LLM's q/v projections and mark the fully trained modules (docs/MODEL.md §5.1)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      bias="none", task_type="CAUSAL_LM", target_modules=config.lora_target or LORA_TARGET)
    peft_model = get_peft_model(model, lora)
    trainable = TRAINABLE_NAMES if config.trainable is None else tuple(config.trainable)
    for name, parameter in peft_model.named_parameters():
        if any(part in name for part in trainable):
            parameter.requires_grad_(True)
    return peft_model
