"""The one inference entry point: encode a frame once, answer commands against it, stream masks.

Used by the CLI, the benchmarks, the evaluator and the ROS node, so the [SEG] path exists once:

1. :meth:`LisaEngine.encode_frame`: SAM image embedding and the projected image tokens (CLIP
   patch features, or pooled SAM features for a ``mm_vision_source: sam`` model) of an RGB image,
   computed once and reusable for any number of commands (the frame cache).
2. :meth:`LisaEngine.answer`: prompt (llava_v1, optional history, automatic suffix), greedy
   generation with the KV cache, and for every generated ``[SEG]`` the final post-norm hidden
   state of the position that *predicted* it (spec §1.5) -> ``text_hidden_fcs`` -> SAM prompt
   encoder + mask decoder (single-mask output) -> upsampled to the source size, threshold 0.
   Each mask is handed to ``on_mask`` the moment its [SEG] is generated, before the rest of the
   answer exists.
3. :meth:`LisaEngine.teacher_forced_seg_states`: the official full-sequence computation and
   indexing (``ids[1:] == seg`` shifted by the image expansion), the reference the cached path is
   tested against and what teacher-forced evaluation uses.

Nothing here imports rclpy.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from lisa_ros.model.loading import LoadedLisa
from lisa_ros.model.preprocess import clip_preprocess, postprocess_masks, sam_preprocess
from lisa_ros.model.prompts import (
    DEFAULT_EXPLAIN_SUFFIX,
    DEFAULT_SEGMENT_SUFFIX,
    Conversation,
    clean_answer,
    split_explanation,
    with_suffix,
)
from lisa_ros.model.tokenization import IMAGE_TOKEN_INDEX


@dataclass
class GenerationOptions:
    """Generation limits and prompt suffixes.

    stop_after_seg: when no explanation is asked for, stop as soon as the sentence holding the
    [SEG] tokens ends (e.g. after "Sure, [SEG].") instead of generating up to max_new_tokens.
    """

    max_new_tokens: int = 512
    stop_after_seg: bool = True
    segment_suffix: str = DEFAULT_SEGMENT_SUFFIX
    explain_suffix: str = DEFAULT_EXPLAIN_SUFFIX


@dataclass
class EncodedFrame:
    """One image encoded for both branches (the frame cache entry).

    image_embedding: ``[1, 256, g, g]`` SAM encoder output; clip_features: ``[1, P, H]`` the
    projected image tokens (P = 256 CLIP patches for ViT-L/14 at 224 px; grid² pooled SAM cells
    for a ``mm_vision_source: sam`` model); vision_features: ``[1, P, mm_hidden_size]`` the same
    before the projector (training applies a trainable projector itself); sizes in (height, width).
    """

    image_embedding: torch.Tensor
    clip_features: torch.Tensor
    resized_size: tuple[int, int]
    original_size: tuple[int, int]
    timings: dict[str, float]
    vision_features: torch.Tensor | None = None


@dataclass
class DecodedMask:
    """One mask: ``mask`` (H, W) bool at the source size; ``score`` in [0, 1] = mean sigmoid
    probability of the decoder logits over the mask's pixels (0 when empty); ``box`` = (x, y,
    width, height) in pixels, zeros when empty; ``token_index``: position of its [SEG] among the
    generated tokens."""

    index: int
    mask: np.ndarray
    score: float
    box: tuple[int, int, int, int]
    token_index: int
    seconds_since_start: float


@dataclass
class Answer:
    """The reply to one command."""

    command: str
    prompt: str
    text: str
    explanation: str
    masks: list[DecodedMask]
    token_ids: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    # [N, H] final post-norm states that predicted each [SEG] (what text_hidden_fcs projected).
    seg_hidden_states: torch.Tensor | None = None

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids)


def _dtype_of(module: torch.nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating dtype of a module's first parameter (quantized weights are not floating)."""
    for parameter in module.parameters():
        if parameter.dtype.is_floating_point:
            return parameter.dtype
    return default


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x, y, width, height) of a boolean mask; zeros when it is empty."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return 0, 0, 0, 0
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)


class LisaEngine:
    """Inference over a loaded LISA (see the module docstring)."""

    def __init__(self, loaded: LoadedLisa, options: GenerationOptions | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.options = options or GenerationOptions()
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.sam = self.model.model.visual_model
        self.seg_token_id = self.tokenizer.seg_token_id
        self._fp32_neck = None
        if self.dtype == torch.float16 and hasattr(self.sam.image_encoder, "blocks"):  # ViT encoders
            # SAM's neck overflows in fp16: run it in fp32, as LISA does (spec §1.6 item 3).
            import copy

            self._fp32_neck = copy.deepcopy(self.sam.image_encoder.neck).float()

    # ------------------------------------------------------------------ frame encoding
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()  # not inference_mode: training uses these tensors as constants in its graph
    def encode_frame(self, rgb: np.ndarray) -> EncodedFrame:
        """Encode an ``(H, W, 3)`` uint8 RGB image once (SAM embedding and CLIP features)."""
        timings = {}
        start = time.perf_counter()
        sam_config = self.model.config.sam
        sam_input = sam_preprocess(rgb, self.sam.image_encoder.img_size, sam_config.pixel_mean, sam_config.pixel_std)
        uses_clip = self.model.config.uses_clip
        if uses_clip:
            clip_input = clip_preprocess(rgb, self.loaded.clip_image_size, self.loaded.clip_mean, self.loaded.clip_std)
        timings["preprocess"] = time.perf_counter() - start

        if uses_clip:
            start = time.perf_counter()
            vision_features = self._clip_patch_features(
                clip_input.to(self.device, _dtype_of(self.loaded.vision_tower, self.dtype)))
            self._sync()
            timings["clip"] = time.perf_counter() - start

        start = time.perf_counter()
        pixels = sam_input.pixels.to(self.device, _dtype_of(self.sam.image_encoder, self.dtype))
        image_embedding = self._sam_image_embedding(pixels)
        if not uses_clip:
            vision_features = self.model.sam_vision_features(image_embedding, pixels)
        self._sync()
        timings["sam_encoder"] = time.perf_counter() - start
        return EncodedFrame(image_embedding, self.project_vision_features(vision_features), sam_input.resized_size,
                            sam_input.original_size, timings, vision_features)

    def _clip_patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        outputs = self.loaded.vision_tower(pixels, output_hidden_states=True)
        features = outputs.hidden_states[config.mm_vision_select_layer]  # no post-layernorm
        if config.mm_vision_select_feature == "patch":
            features = features[:, 1:]  # drop CLS
        return features

    def _clip_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected CLIP patch features of CLIP-preprocessed ``pixels`` (benchmarks call this)."""
        return self.project_vision_features(self._clip_patch_features(pixels))

    def project_vision_features(self, features: torch.Tensor) -> torch.Tensor:
        """``[1, P, mm_hidden_size]`` -> ``[1, P, H]`` through ``mm_projector`` (autograd follows
        the projector's own parameters: training calls this with a trainable one)."""
        projector = self.model.model.mm_projector
        # Modules may not all share the run dtype (QLoRA preparation keeps unquantized ones fp32).
        return projector(features.to(_dtype_of(projector, self.dtype))).to(self.dtype)

    def _sam_image_embedding(self, pixels: torch.Tensor) -> torch.Tensor:
        encoder = self.sam.image_encoder
        if self._fp32_neck is None:
            return encoder(pixels)
        x = encoder.patch_embed(pixels)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        for block in encoder.blocks:
            x = block(x)
        return self._fp32_neck(x.permute(0, 3, 1, 2).float()).to(x.dtype)

    # ------------------------------------------------------------------ prompt and embeddings
    def build_prompt(self, command: str, explain: bool, history: Conversation | None = None) -> tuple[str, Conversation]:
        """The rendered prompt and the conversation it came from (history + the new question)."""
        conversation = Conversation(list(history.turns) if history else [])
        conversation.ask(with_suffix(command, explain, self.options.segment_suffix, self.options.explain_suffix))
        return conversation.prompt(), conversation

    @torch.inference_mode()
    def input_embeddings(self, ids: list[int], clip_features: torch.Tensor) -> torch.Tensor:
        """``[1, L + P - 1, H]``: token embeddings with the -200 placeholder replaced by P features."""
        return self.embed_with_image(ids, clip_features)

    def embed_with_image(self, ids: list[int], clip_features: torch.Tensor) -> torch.Tensor:
        """As :meth:`input_embeddings`, with autograd (training)."""
        if ids.count(IMAGE_TOKEN_INDEX) != 1:
            raise ValueError("the token sequence must hold exactly one image placeholder")
        at = ids.index(IMAGE_TOKEN_INDEX)
        embed = self.model.model.embed_tokens
        before = embed(torch.tensor([ids[:at]], device=self.device))
        after = embed(torch.tensor([ids[at + 1:]], device=self.device))
        return torch.cat([before, clip_features.to(before.dtype), after], dim=1)

    # ------------------------------------------------------------------ masks
    def _dense_pe(self) -> torch.Tensor:
        """SAM's dense positional encoding computed in the Gaussian matrix's dtype (as LISA)."""
        encoder = self.sam.prompt_encoder
        gaussian = encoder.pe_layer.positional_encoding_gaussian_matrix
        h, w = encoder.image_embedding_size
        grid = torch.ones((h, w), device=gaussian.device, dtype=gaussian.dtype)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return encoder.pe_layer._pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1).unsqueeze(0)

    @torch.inference_mode()
    def decode_masks(self, seg_hidden: torch.Tensor, frame: EncodedFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, H]`` [SEG] states -> (``[N, H_src, W_src]`` float32 logits, ``[N]`` scores)."""
        logits = self.mask_logits(seg_hidden, frame)
        masks = logits > 0
        probabilities = torch.sigmoid(logits)
        counts = masks.sum(dim=(1, 2))
        scores = torch.where(counts > 0, (probabilities * masks).sum(dim=(1, 2)) / counts.clamp(min=1),
                             torch.zeros_like(counts, dtype=probabilities.dtype))
        return logits, scores

    def mask_logits(self, seg_hidden: torch.Tensor, frame: EncodedFrame) -> torch.Tensor:
        """``[N, H]`` [SEG] states -> ``[N, H_src, W_src]`` float32 logits, with autograd (training)."""
        return self.mask_logits_from_prompts(self.model.project_seg_hidden_states(seg_hidden), frame)

    def mask_logits_from_prompts(self, prompts: torch.Tensor, frame: EncodedFrame) -> torch.Tensor:
        """``[N, 256]`` sparse prompt tokens (projected [SEG] states) -> ``[N, H_src, W_src]`` logits."""
        encoder, decoder = self.sam.prompt_encoder, self.sam.mask_decoder
        logits = []
        for prompt in prompts:  # the decoder repeats the image embedding per prompt: one at a time
            sparse, dense = encoder(points=None, boxes=None, masks=None)
            sparse = torch.cat([sparse.to(prompt.dtype), prompt.view(1, 1, -1)], dim=1)
            low_res, _iou = decoder(
                image_embeddings=frame.image_embedding,
                image_pe=self._dense_pe().to(frame.image_embedding.dtype),
                sparse_prompt_embeddings=sparse.to(frame.image_embedding.dtype),
                dense_prompt_embeddings=dense.to(frame.image_embedding.dtype),
                multimask_output=False,
            )
            logits.append(postprocess_masks(low_res, frame.resized_size, frame.original_size,
                                            encoder.input_image_size[0]))
        if not logits:
            h, w = frame.original_size
            return torch.zeros((0, h, w))
        return torch.cat(logits, dim=0)

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def answer(
        self,
        frame: EncodedFrame | np.ndarray,
        command: str,
        explain: bool = False,
        history: Conversation | None = None,
        on_mask: Callable[[DecodedMask], None] | None = None,
        on_token: Callable[[str, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        forced_ids: list[int] | None = None,
    ) -> tuple[Answer, Conversation]:
        """Answer ``command`` about ``frame``; returns the answer and the updated conversation.

        ``on_mask(mask)`` runs as soon as each mask is decoded, ``on_token(partial_text, n)``
        after each generated token, and generation ends early when ``should_stop()`` is true.
        ``forced_ids``: teacher forcing on the cached path: emit these tokens instead of the
        argmax (same compute as generation; benchmarks use it for a realistic answer shape).
        """
        from transformers import DynamicCache

        started = time.perf_counter()
        timings: dict[str, float] = {}
        if isinstance(frame, np.ndarray):
            frame = self.encode_frame(frame)
            timings.update(frame.timings)
        prompt, conversation = self.build_prompt(command, explain, history)
        ids = self.tokenizer.encode_with_image(prompt)

        start = time.perf_counter()
        embeds = self.input_embeddings(ids, frame.clip_features)
        outputs = self.model.model(inputs_embeds=embeds, past_key_values=DynamicCache(), use_cache=True)
        hidden = outputs.last_hidden_state[:, -1]  # post-norm state at the last prompt position
        self._sync()
        timings["prefill"] = time.perf_counter() - start

        generated: list[int] = []
        masks: list[DecodedMask] = []
        seg_states: list[torch.Tensor] = []
        decode_time = mask_time = 0.0
        stop_at_sentence_end = self.options.stop_after_seg and not explain
        limit = self.options.max_new_tokens if forced_ids is None else len(forced_ids)
        for step in range(limit):
            if should_stop is not None and should_stop():
                break
            next_id = int(self.model.lm_head(hidden).float().argmax(dim=-1)[0])
            if forced_ids is not None:
                next_id = forced_ids[step]
            generated.append(next_id)
            if next_id == self.seg_token_id:
                mask_start = time.perf_counter()
                # `hidden` is the state that predicted this [SEG]: the one LISA projects.
                seg_states.append(hidden[0].detach().clone())
                logits, scores = self.decode_masks(hidden, frame)
                mask = (logits[0] > 0).cpu().numpy()
                decoded = DecodedMask(len(masks), mask, float(scores[0]), mask_box(mask),
                                      len(generated) - 1, time.perf_counter() - started)
                masks.append(decoded)
                mask_time += time.perf_counter() - mask_start
                if on_mask is not None:
                    on_mask(decoded)
            if on_token is not None:
                on_token(clean_answer(self.tokenizer.decode(generated)), len(generated))
            if next_id == self.tokenizer.eos_token_id:
                break
            if stop_at_sentence_end and masks and next_id != self.seg_token_id:
                if self.tokenizer.decode([next_id]).rstrip().endswith((".", "!", "?")):
                    break
            if step == limit - 1:
                break  # no forward pass for a token that will never be generated
            step_start = time.perf_counter()
            outputs = self.model.model(input_ids=torch.tensor([[next_id]], device=self.device),
                                       past_key_values=outputs.past_key_values, use_cache=True)
            hidden = outputs.last_hidden_state[:, -1]
            self._sync()
            decode_time += time.perf_counter() - step_start

        text = clean_answer(self.tokenizer.decode(generated))
        conversation.answer(text)
        timings["decode"] = decode_time
        timings["mask_decode"] = mask_time
        timings["time_to_first_mask"] = masks[0].seconds_since_start if masks else math.nan
        timings["total"] = time.perf_counter() - started
        answer = Answer(command, prompt, text, split_explanation(text), masks, generated, timings,
                        torch.stack(seg_states) if seg_states else None)
        return answer, conversation

    # ------------------------------------------------------------------ official reference
    @torch.inference_mode()
    def teacher_forced_seg_states(self, frame: EncodedFrame, ids: list[int]) -> torch.Tensor:
        """The official computation: one full-sequence forward over ``ids`` (prompt and answer,
        one -200 placeholder), then :func:`gather_seg_states`. Returns ``[N, H]``."""
        embeds = self.input_embeddings(ids, frame.clip_features)
        hidden = self.model.model(inputs_embeds=embeds, use_cache=False).last_hidden_state[0]
        return gather_seg_states(hidden, ids, self.seg_token_id, frame.clip_features.shape[1])


def gather_seg_states(hidden: torch.Tensor, ids: list[int], seg_token_id: int, num_patches: int) -> torch.Tensor:
    """[SEG] states with the official indexing (spec §1.5 items 1-2).

    ``hidden``: ``[T, H]`` final post-norm states over the expanded sequence (T may stop short of
    the last token, as the last step of uncached generation does). The mask ``ids[1:] == seg``
    selects the state *before* each [SEG]; ``num_patches - 1`` False entries are prepended for the
    image expansion (255 for CLIP ViT-L/14 at 224 px).
    """
    seg_mask = torch.tensor([token == seg_token_id for token in ids[1:]], device=hidden.device)
    seg_mask = torch.cat([torch.zeros(num_patches - 1, dtype=torch.bool, device=hidden.device), seg_mask])
    length = min(hidden.shape[0], seg_mask.shape[0])
    return hidden[:length][seg_mask[:length]]
