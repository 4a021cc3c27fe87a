"""Image preprocessing for the two branches and mask postprocessing (docs/MODEL.md §3.1,
docs/MODEL.md §3.2, docs/MODEL.md §1.7).

* SAM branch: longest side resized to 1024 (PIL bilinear), normalised with SAM's pixel mean/std
  on the 0-255 scale, zero-padded bottom/right to 1024x1024 *after* normalisation.
* CLIP branch: shortest side to 224 (PIL bicubic), centre crop 224x224, /255, CLIP mean/std.
* Images thinner than one encoder patch after the resize are refused (:func:`check_image_size`).
* Masks: low-resolution logits -> 1024x1024 -> crop the unpadded region -> original size, all
  bilinear without corner alignment; a pixel belongs to the mask when its logit is > 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lisa_ros.errors import InvalidImageError

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# The image encoders see the image in 16x16-pixel patches of the 1024-pixel input (SAM's ViT
# patch embedding; TinyViT's 64x64 output grid): a side shorter than one patch after the resize
# to 1024 would be less than one feature cell, and rounds to nothing at the CLIP and object
# branches' coarser resolutions.
ENCODER_PATCH = 16


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidImageError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError("empty image")


def check_image_size(height: int, width: int, image_size: int = 1024) -> None:
    """Raise InvalidImageError when an image of ``height`` x ``width`` pixels is too thin for the
    image encoders: its shorter side, once the longer one is resized to ``image_size``, must
    span one encoder patch (:data:`ENCODER_PATCH` pixels), i.e. an aspect ratio of at most 64:1
    at 1024. Line-scan rows (2048x1) and slivers (4096x4) are refused; any camera image passes."""
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"image is {width}x{height}: empty")
    short = min(height, width) * image_size / max(height, width)
    if short < ENCODER_PATCH:
        limit = image_size // ENCODER_PATCH
        raise InvalidImageError(
            f"image is {width}x{height}: too thin for the image encoder (its shorter side would be "
            f"{short:.2g} px at {image_size} px, less than one {ENCODER_PATCH}-px patch); the aspect "
            f"ratio must be at most {limit}:1")


def resized_longest_side(height: int, width: int, target: int = 1024) -> tuple[int, int]:
    """The size SAM resizes (height, width) to: longest side = target, rounded half up."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclass
class SamInput:
    """One image prepared for the SAM encoder.

    ``pixels``: ``[1, 3, S, S]`` float32 (S = 1024 normally); ``resized_size``: the (h', w') of the
    unpadded region; ``original_size``: (H, W) of the source image.
    """

    pixels: torch.Tensor
    resized_size: tuple[int, int]
    original_size: tuple[int, int]


def sam_preprocess(image: np.ndarray, image_size: int = 1024, pixel_mean=SAM_PIXEL_MEAN,
                   pixel_std=SAM_PIXEL_STD) -> SamInput:
    """Prepare an ``(H, W, 3)`` uint8 RGB image for the SAM image encoder (docs/MODEL.md §3.2).

    ``pixel_mean``/``pixel_std`` (0-255 scale) are SAM's unless the checkpoint's encoder was
    trained with others (LiteMedSAM: see ``SamConfig.lite_medsam``)."""
    _check_rgb(image)
    height, width = image.shape[:2]
    check_image_size(height, width, image_size)
    new_h, new_w = resized_longest_side(height, width, image_size)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    pixels = torch.from_numpy(resized.astype(np.float32)).permute(2, 0, 1)
    mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)
    pixels = (pixels - mean) / std
    # Zero in normalised space: padding comes after normalisation, as LISA was trained.
    pixels = F.pad(pixels, (0, image_size - new_w, 0, image_size - new_h))
    return SamInput(pixels.unsqueeze(0), (new_h, new_w), (height, width))


def clip_preprocess(image: np.ndarray, size: int = 224, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """Prepare an ``(H, W, 3)`` uint8 RGB image for the CLIP vision tower: ``[1, 3, size, size]``.

    Matches transformers' ``CLIPImageProcessor`` for openai/clip-vit-large-patch14 (shortest
    edge ``size``, bicubic, centre crop, rescale, normalise); a test checks it against it.
    """
    _check_rgb(image)
    height, width = image.shape[:2]
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    crop = resized[top:top + size, left:left + size].astype(np.float32) / 255.0
    crop = (crop - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).contiguous()


def postprocess_masks(low_res_logits: torch.Tensor, resized_size: tuple[int, int],
                      original_size: tuple[int, int], image_size: int = 1024) -> torch.Tensor:
    """Mask-decoder logits ``[N, 1, h, w]`` -> ``[N, H, W]`` float32 logits at the source size.

    Threshold the result at 0 for the binary mask.
    """
    logits = low_res_logits.float()
    logits = F.interpolate(logits, (image_size, image_size), mode="bilinear", align_corners=False)
    logits = logits[..., : resized_size[0], : resized_size[1]]
    logits = F.interpolate(logits, tuple(original_size), mode="bilinear", align_corners=False)
    return logits[:, 0]
