"""SAM module tree (released key names and shapes) and the spec's preprocessing/postprocessing."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lisa_ros.model.preprocess import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    clip_preprocess,
    postprocess_masks,
    resized_longest_side,
    sam_preprocess,
)
from lisa_ros.model.sam import SamConfig, build_sam, sam_modeling


def test_sam_modeling_imports_without_torchvision():
    assert importlib.util.find_spec("torchvision") is None
    modeling = sam_modeling()
    for name in ("Sam", "ImageEncoderViT", "PromptEncoder", "MaskDecoder", "TwoWayTransformer"):
        assert hasattr(modeling, name)


def test_vit_h_sam_has_the_released_key_names_and_shapes():
    with torch.device("meta"):  # shapes only: no 2.5 GB allocation
        sam = build_sam(SamConfig.vit_h())
    shapes = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    assert shapes["image_encoder.pos_embed"] == (1, 64, 64, 1280)
    assert shapes["image_encoder.blocks.0.attn.rel_pos_h"] == (27, 80)    # windowed block
    assert shapes["image_encoder.blocks.7.attn.rel_pos_h"] == (127, 80)   # global block
    assert shapes["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] == (2, 128)
    assert shapes["prompt_encoder.no_mask_embed.weight"] == (1, 256)
    assert shapes["mask_decoder.mask_tokens.weight"] == (4, 256)
    assert shapes["mask_decoder.iou_token.weight"] == (1, 256)
    assert "image_encoder.neck.3.weight" in shapes and "mask_decoder.output_upscaling.3.weight" in shapes
    assert not any("pixel_mean" in k or "pixel_std" in k for k in shapes)  # non-persistent
    assert sum(p.numel() for p in sam.mask_decoder.parameters()) == 4_058_340  # docs/MODEL.md §1.6
    assert {k.split(".")[0] for k in shapes} == {"image_encoder", "prompt_encoder", "mask_decoder"}


@pytest.mark.parametrize("size,expected", [((480, 640), (768, 1024)), ((640, 480), (1024, 768)),
                                           ((1080, 1920), (576, 1024)), ((1024, 1024), (1024, 1024)),
                                           ((3, 1000), (3, 1024)), ((1, 1), (1024, 1024))])
def test_sam_resize_longest_side(size, expected):
    assert resized_longest_side(*size) == expected


def test_sam_input_is_normalised_then_zero_padded():
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    prepared = sam_preprocess(image)
    assert prepared.pixels.shape == (1, 3, 1024, 1024)
    assert prepared.resized_size == (768, 1024) and prepared.original_size == (480, 640)
    assert torch.all(prepared.pixels[:, :, 768:, :] == 0)  # bottom padding, zero after normalisation
    resized = np.asarray(Image.fromarray(image).resize((1024, 768), Image.BILINEAR)).astype(np.float32)
    expected = (resized - np.array(SAM_PIXEL_MEAN, np.float32)) / np.array(SAM_PIXEL_STD, np.float32)
    np.testing.assert_allclose(prepared.pixels[0, :, :768].permute(1, 2, 0).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_preprocessing_refuses_non_rgb8(bad):
    with pytest.raises(ValueError):
        sam_preprocess(bad)
    with pytest.raises(ValueError):
        clip_preprocess(bad)


def test_postprocessed_mask_has_the_source_size_and_follows_the_logits():
    low_res = torch.full((2, 1, 256, 256), -5.0)
    low_res[0, :, :, :96] = 5.0  # mask 0: left 96/256 of the 1024 canvas = left 384 px
    constant = postprocess_masks(torch.full((1, 1, 256, 256), 0.75), (768, 1024), (480, 640))
    assert constant.shape == (1, 480, 640) and constant.dtype == torch.float32
    assert torch.allclose(constant, torch.tensor(0.75))
    masks = postprocess_masks(low_res, (768, 1024), (480, 640)) > 0
    assert masks.shape == (2, 480, 640)
    columns = masks[0].any(dim=0).nonzero().flatten()
    # 384 of 1024 resized columns -> 240 of 640 source columns (bilinear edge within a pixel).
    assert 239 <= int(columns.max()) <= 240 and int(columns.min()) == 0
    assert not masks[1].any()


def test_padding_rows_never_reach_the_source_mask():
    low_res = torch.full((1, 1, 256, 256), -5.0)
    low_res[..., 192:, :] = 5.0  # only the padded bottom quarter (rows 768..1023) is positive
    assert not (postprocess_masks(low_res, (768, 1024), (480, 640)) > 0).any()


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(0, 2**32 - 1))
def test_clip_preprocessing_matches_transformers_clip_image_processor(height, width, seed):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(  # openai/clip-vit-large-patch14's preprocessor_config.json
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
        do_center_crop=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711])
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    expected = processor(images=image, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    ours = clip_preprocess(image)
    assert ours.shape == expected.shape == (1, 3, 224, 224)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
