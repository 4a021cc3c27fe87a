"""LISA's ``config.json``: a LLaMA config plus the LLaVA/LISA fields of the released checkpoints.

Released LISA folders say ``model_type: "llava"`` and ``architectures: ["LISAForCausalLM"]``; their
"llava" is the original LLaVA's LlamaConfig subclass, not transformers' composite LlavaConfig,
so the file is read with this class (a LlamaConfig) rather than AutoConfig.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lisa_ros.model.quiet_imports import import_torchao_quietly

import_torchao_quietly()  # before transformers, which imports torchao when it is installed
from transformers import LlamaConfig

from lisa_ros.model.sam import SamConfig

DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14"
VISION_SOURCES = ("clip", "objects")


class LisaConfig(LlamaConfig):
    """Configuration of :class:`~lisa_ros.model.modeling.LisaForCausalLM`.

    Besides the LLaMA fields: ``out_dim`` (SAM prompt width, 256), ``train_mask_decoder`` (its
    presence marks a LISA checkpoint, as opposed to a base LLaVA), ``vision_tower`` /
    ``mm_vision_tower`` (the CLIP tower: hub id or folder; ``vision_tower`` wins),
    ``mm_hidden_size`` (CLIP width, 1024), ``mm_vision_select_layer`` (-2),
    ``mm_use_im_start_end`` (True). ``sam_config`` is ours: absent in released checkpoints, which
    all use SAM ViT-H; small test checkpoints record their SAM shapes there.

    ``mm_vision_source`` is ours too: ``"clip"`` (released LISA: CLIP patch features feed the
    projector) or ``"objects"`` (the embedded model, which has no CLIP: object phrases from a small
    CNN over the SAM input, at most ``mm_max_objects`` objects; see :mod:`lisa_ros.model.objects`).
    """

    model_type = "llava"

    def __init__(
        self,
        out_dim: int = 256,
        train_mask_decoder: bool = True,
        vision_tower: str | None = None,
        mm_vision_tower: str | None = None,
        mm_hidden_size: int = 1024,
        mm_vision_select_layer: int = -2,
        mm_vision_select_feature: str = "patch",
        mm_use_im_start_end: bool = True,
        mm_use_im_patch_token: bool = False,
        use_mm_proj: bool = True,
        sam_config: dict[str, Any] | None = None,
        mm_vision_source: str = "clip",
        mm_max_objects: int = 6,
        **kwargs: Any,
    ):
        self.out_dim = out_dim
        self.train_mask_decoder = train_mask_decoder
        self.mm_vision_tower = mm_vision_tower or vision_tower or DEFAULT_VISION_TOWER
        self.vision_tower = vision_tower or self.mm_vision_tower
        self.mm_hidden_size = mm_hidden_size
        self.mm_vision_select_layer = mm_vision_select_layer
        self.mm_vision_select_feature = mm_vision_select_feature
        self.mm_use_im_start_end = mm_use_im_start_end
        self.mm_use_im_patch_token = mm_use_im_patch_token
        self.use_mm_proj = use_mm_proj
        self.sam_config = sam_config
        if mm_vision_source not in VISION_SOURCES:
            raise ValueError(f"mm_vision_source must be one of {VISION_SOURCES}, got {mm_vision_source!r}")
        self.mm_vision_source = mm_vision_source
        self.mm_max_objects = mm_max_objects
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def sam(self) -> SamConfig:
        """The SAM shapes: ViT-H unless the folder records others."""
        return SamConfig(**self.sam_config) if self.sam_config else SamConfig.vit_h()

    def set_sam(self, sam: SamConfig) -> None:
        self.sam_config = asdict(sam)

    @property
    def uses_clip(self) -> bool:
        return self.mm_vision_source == "clip"
