"""The LISA module tree, with the parameter names of the released checkpoints, and its maths.

``LisaForCausalLM`` is transformers' ``LlamaForCausalLM`` whose body (``model``) also owns:

* ``model.mm_projector``: Linear(mm_hidden_size -> H), image features into the LLM;
* ``model.visual_model``: a segment-anything ``Sam`` (image encoder, prompt encoder, decoder);
* ``model.text_hidden_fcs``: ModuleList([Sequential(Linear(H, H), ReLU, Linear(H, out_dim),
  Dropout(0))]), which turns the hidden state that predicted ``[SEG]`` into a SAM prompt.

So ``state_dict()`` keys are exactly the released ones (``model.layers.*``, ``model.embed_tokens``,
``model.norm``, ``model.mm_projector``, ``model.visual_model.{image_encoder,prompt_encoder,
mask_decoder}``, ``model.text_hidden_fcs.0.{0,2}``, ``lm_head``). The CLIP vision tower is not in
released checkpoints and is deliberately not a submodule: the loader attaches it with
:meth:`LisaForCausalLM.attach_vision_tower`, which keeps checkpoint loading strict.

As transformers' LLaVA does, the model owns its image features and the placeholder splice; it also
owns the [SEG] projection, the official [SEG] gather and mask decoding (docs/MODEL.md §1). Every method lets
autograd follow (training calls them); inference wraps them in ``torch.inference_mode``. Names:
*encoder features* are what the vision encoder gives (CLIP patches, or pooled SAM cells),
*image tokens* are the same after ``mm_projector`` (what replaces the ``<image>`` placeholder).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from lisa_ros.model.quiet_imports import import_torchao_quietly

import_torchao_quietly()  # before transformers, which imports torchao when it is installed
from transformers import LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from lisa_ros.model import objects
from lisa_ros.model.configuration import LisaConfig
from lisa_ros.model.preprocess import postprocess_masks
from lisa_ros.model.sam import box_prompt_tokens, build_sam, dense_positional_encoding, positional_encoding
from lisa_ros.model.tokenization import IMAGE_TOKEN_INDEX


def build_text_hidden_fcs(hidden_size: int, out_dim: int) -> nn.ModuleList:
    """The [SEG] projection: ``[N, H] -> [N, out_dim]`` (H -> H -> out_dim, ReLU between)."""
    return nn.ModuleList([
        nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_size, out_dim),
            nn.Dropout(0.0),
        )
    ])


def floating_dtype(module: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The floating dtype of a module's first floating parameter (quantized weights are not
    floating; QLoRA preparation keeps some modules fp32 beside 16-bit ones)."""
    for parameter in module.parameters():
        if parameter.dtype.is_floating_point:
            return parameter.dtype
    return default


@dataclass
class SplicedInputs:
    """Token embeddings with the image tokens spliced in (docs/MODEL.md §1.3).

    ``inputs_embeds``: ``[B, T + P - 1, H]``; ``attention_mask``: ``[B, T + P - 1]`` (1 = real,
    0 = padding); ``image_start``: ``[B]`` position of each row's first image token.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    image_start: torch.Tensor


def expand_at_image(values: torch.Tensor, input_ids: torch.Tensor, num_image_tokens: int, fill) -> torch.Tensor:
    """Any per-token ``[B, T]`` tensor (labels, masks) aligned with the spliced sequence:
    ``[B, T + P - 1]``, the placeholder's entry replaced by ``num_image_tokens`` entries ``fill``."""
    rows = []
    for row_values, row_ids in zip(values, input_ids):
        at = int((row_ids == IMAGE_TOKEN_INDEX).nonzero()[0, 0])
        image = torch.full((num_image_tokens,), fill, dtype=values.dtype, device=values.device)
        rows.append(torch.cat([row_values[:at], image, row_values[at + 1:]]))
    return torch.stack(rows)


def gather_seg_states(hidden: torch.Tensor, ids: list[int], seg_token_id: int, num_image_tokens: int) -> torch.Tensor:
    """[SEG] states with the official indexing (docs/MODEL.md §1.5 items 1-2).

    ``hidden``: ``[T, H]`` final post-norm states over the spliced sequence (T may stop short of
    the last token, as the last step of uncached generation does); ``ids``: the tokens with one
    -200 placeholder. The mask ``ids[1:] == seg`` selects the state *before* each [SEG];
    ``num_image_tokens - 1`` False entries are prepended for the image expansion (255 for CLIP
    ViT-L/14 at 224 px). Returns ``[N, H]``.
    """
    seg_mask = torch.tensor([token == seg_token_id for token in ids[1:]], device=hidden.device)
    seg_mask = torch.cat([torch.zeros(num_image_tokens - 1, dtype=torch.bool, device=hidden.device), seg_mask])
    length = min(hidden.shape[0], seg_mask.shape[0])
    return hidden[:length][seg_mask[:length]]


class LisaModel(LlamaModel):
    """The LLaMA decoder plus the LLaVA projector, SAM and the [SEG] projection."""

    config_class = LisaConfig

    def __init__(self, config: LisaConfig):
        super().__init__(config)
        self.mm_projector = nn.Linear(config.mm_hidden_size, config.hidden_size)
        if config.mm_vision_source == "objects":  # the embedded model's vision for the language model
            self.mm_object_encoder = objects.ObjectEncoder()
        self.visual_model = build_sam(config.sam)
        self.text_hidden_fcs = build_text_hidden_fcs(config.hidden_size, config.out_dim)


class LisaForCausalLM(LlamaForCausalLM):
    """LISA: LLaVA-v1 with a [SEG] token decoded into masks by SAM.

    Forward/generate are LlamaForCausalLM's, fed with the ``inputs_embeds`` of
    :meth:`embed_with_image_tokens`.
    """

    config_class = LisaConfig
    _no_split_modules = ["LlamaDecoderLayer", "Sam"]

    def __init__(self, config: LisaConfig):
        # LlamaForCausalLM.__init__ would build a plain LlamaModel first; build ours directly.
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LisaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    # ------------------------------------------------------------------ vision encoders
    @property
    def visual_model(self):
        """segment-anything's ``Sam``."""
        return self.model.visual_model

    @property
    def vision_tower(self):
        """The CLIP ``CLIPVisionModel`` (None for a ``mm_vision_source: objects`` model or before
        :meth:`attach_vision_tower`)."""
        return self.__dict__.get("_vision_tower")

    def attach_vision_tower(self, tower: nn.Module | None) -> None:
        """Use ``tower`` as the CLIP encoder. Stored outside the module tree (in ``__dict__``), so it
        is not in ``state_dict()``, not moved by ``.to()`` and not wrapped by peft: released
        checkpoints do not hold it, and it stays frozen."""
        self.__dict__["_vision_tower"] = tower

    def sam_image_embedding(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` SAM-preprocessed pixels -> ``[B, 256, g, g]`` image embedding.

        In fp16 the ViT neck overflows: it runs in fp32, as LISA does (docs/MODEL.md §1.6 item 3)."""
        encoder = self.visual_model.image_encoder
        pixels = pixels.to(next(encoder.parameters()).device, floating_dtype(encoder, pixels.dtype))
        if pixels.dtype != torch.float16 or not hasattr(encoder, "blocks"):  # TinyViT: no ViT neck
            return encoder(pixels)
        neck = self.__dict__.get("_fp32_neck")
        if neck is None:
            neck = self.__dict__["_fp32_neck"] = copy.deepcopy(encoder.neck).float()
        x = encoder.patch_embed(pixels)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        for block in encoder.blocks:
            x = block(x)
        return neck(x.permute(0, 3, 1, 2).float()).to(x.dtype)

    def clip_encoder_features(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, s, s]`` CLIP-preprocessed pixels -> ``[B, P, mm_hidden_size]``: the hidden
        states of layer ``mm_vision_select_layer`` (no post-layernorm), CLS dropped for "patch"."""
        tower = self.vision_tower
        if tower is None:
            raise RuntimeError("this model has no CLIP vision tower attached")
        outputs = tower(clip_pixels.to(floating_dtype(tower)), output_hidden_states=True)
        features = outputs.hidden_states[self.config.mm_vision_select_layer]
        if self.config.mm_vision_select_feature == "patch":
            features = features[:, 1:]
        return features

    def detect_objects(self, sam_pixels: torch.Tensor) -> list[list[objects.DetectedObject]]:
        """The objects the object encoder finds in ``[B, 3, S, S]`` SAM-preprocessed pixels
        (a ``mm_vision_source: objects`` model), at most ``mm_max_objects`` each, in reading order."""
        encoder = self.model.mm_object_encoder
        maps = encoder(sam_pixels.to(next(encoder.parameters()).device, floating_dtype(encoder, sam_pixels.dtype)))
        return objects.detect(maps, self.config.mm_max_objects)

    def object_encoder_features(self, sam_pixels: torch.Tensor, resized_sizes: list[tuple[int, int]],
                                detected: list[list[objects.DetectedObject]] | None = None) -> torch.Tensor:
        """The encoder features of a ``mm_vision_source: objects`` model: ``[B, P, len(VISUAL_WORDS)
        + prompt_dim]`` with P = ``mm_max_objects`` x 6 phrase tokens (:func:`objects.phrase_features`);
        ``resized_sizes``: each image's (h, w) inside the padded square."""
        detected = self.detect_objects(sam_pixels) if detected is None else detected
        prompt_encoder = self.visual_model.prompt_encoder
        features = objects.phrase_features(detected, resized_sizes, sam_pixels.shape[-1], self.config.mm_max_objects,
                                           lambda xy: positional_encoding(prompt_encoder, xy))
        return features.to(sam_pixels.device)

    def project_image_features(self, encoder_features: torch.Tensor) -> torch.Tensor:
        """``[B, P, mm_hidden_size]`` encoder features -> ``[B, P, H]`` image tokens (``mm_projector``),
        in the language model's dtype."""
        projector = self.model.mm_projector
        tokens = projector(encoder_features.to(floating_dtype(projector, encoder_features.dtype)))
        return tokens.to(floating_dtype(self.model.embed_tokens, tokens.dtype))

    def encoder_features(self, sam_pixels: torch.Tensor | None = None, clip_pixels: torch.Tensor | None = None,
                         resized_sizes: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """What the projector reads of one batch of images, ``[B, P, mm_hidden_size]``: CLIP patch
        features (``clip_pixels``), or for ``mm_vision_source: objects`` the object phrases
        (``sam_pixels``, ``resized_sizes``). The one place the vision source is chosen. Raises
        ValueError when the input the source reads is missing."""
        if self.config.mm_vision_source == "clip":
            if clip_pixels is None:
                raise ValueError("a CLIP-source model reads clip_pixels (the CLIP-preprocessed image)")
            return self.clip_encoder_features(clip_pixels)
        if sam_pixels is None or resized_sizes is None:
            raise ValueError("an objects-source model reads sam_pixels and resized_sizes")
        return self.object_encoder_features(sam_pixels, resized_sizes)

    @property
    def encoder_reads_sam_input(self) -> bool:
        """Whether :meth:`encoder_features` reads the SAM-preprocessed pixels through a module of
        this model that training may change (the object encoder), rather than a frozen CLIP tower."""
        return self.config.mm_vision_source == "objects"

    def get_image_features(self, sam_pixels: torch.Tensor | None = None, clip_pixels: torch.Tensor | None = None,
                           resized_sizes: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """The image tokens ``[B, P, H]`` of one batch of images: :meth:`encoder_features` through
        the projector."""
        return self.project_image_features(self.encoder_features(sam_pixels, clip_pixels, resized_sizes))

    # ------------------------------------------------------------------ the language model
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` token ids (no image placeholder) -> ``[B, T, H]`` input embeddings."""
        return self.model.embed_tokens(input_ids)

    def language_model_states(self, inputs_embeds: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                              past_key_values=None) -> torch.Tensor:
        """``[B, T, H]`` final post-norm hidden states of the decoder over ``inputs_embeds``
        (``[B, T, H]``) or ``input_ids`` (``[B, T]``); with ``past_key_values`` (a transformers
        ``DynamicCache``) the sequence continues the cached one and the cache is extended in place."""
        return self.model(inputs_embeds=inputs_embeds, input_ids=input_ids, past_key_values=past_key_values,
                          use_cache=past_key_values is not None).last_hidden_state

    def token_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` final hidden states -> ``[..., V]`` logits of the token each one predicts."""
        return self.lm_head(hidden_states)

    # ------------------------------------------------------------------ the splice
    def embed_with_image_tokens(self, input_ids: torch.Tensor, image_tokens: torch.Tensor,
                                attention_mask: torch.Tensor | None = None) -> SplicedInputs:
        """Token embeddings with each row's ``-200`` placeholder replaced by its image tokens.

        ``input_ids``: ``[B, T]`` (right-padded; every row holds exactly one placeholder);
        ``image_tokens``: ``[B, P, H]``; ``attention_mask``: ``[B, T]`` (default: all ones).
        Raises ValueError when a row does not hold exactly one placeholder.
        """
        if input_ids.dim() != 2 or image_tokens.dim() != 3 or image_tokens.shape[0] != input_ids.shape[0]:
            raise ValueError(f"input_ids [B, T] and image_tokens [B, P, H] expected, got "
                             f"{tuple(input_ids.shape)} and {tuple(image_tokens.shape)}")
        placeholders = input_ids == IMAGE_TOKEN_INDEX
        if not bool((placeholders.sum(dim=1) == 1).all()):
            raise ValueError("every token sequence must hold exactly one image placeholder")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embed = self.model.embed_tokens
        text = embed(input_ids.masked_fill(placeholders, 0))
        image_tokens = image_tokens.to(text.dtype)
        starts = placeholders.int().argmax(dim=1)
        rows = [torch.cat([text[b, :at], image_tokens[b], text[b, at + 1:]]) for b, at in enumerate(starts.tolist())]
        mask = expand_at_image(attention_mask, input_ids, image_tokens.shape[1], 1)
        return SplicedInputs(torch.stack(rows), mask, starts)

    # ------------------------------------------------------------------ [SEG] and masks
    def project_seg_hidden_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[N, H]`` final post-norm hidden states that predicted [SEG] -> ``[N, out_dim]`` prompts."""
        projection = self.model.text_hidden_fcs[0]
        weight_dtype = projection[0].weight.dtype
        if weight_dtype.is_floating_point:  # quantized weights (uint8) take the input as it is
            hidden_states = hidden_states.to(weight_dtype)
        return projection(hidden_states)

    def decode_mask_logits(self, prompts: torch.Tensor, image_embedding: torch.Tensor,
                           resized_size: tuple[int, int], original_size: tuple[int, int]) -> torch.Tensor:
        """``[N, out_dim]`` sparse prompt tokens (projected [SEG] states, or point tokens) on one
        image's ``[1, 256, g, g]`` embedding -> ``[N, H_src, W_src]`` float32 mask logits at the
        source size (threshold 0). Each prompt goes with SAM's empty sparse prompt and the
        no-mask dense embedding, single-mask output (docs/MODEL.md §1.6). :meth:`decode_prompted_masks`
        gives the same with the decoder's predicted IoU and other prompts."""
        return self.decode_prompted_masks(image_embedding, resized_size, original_size, tokens=prompts)[0]

    def decode_prompted_masks(self, image_embedding: torch.Tensor, resized_size: tuple[int, int],
                              original_size: tuple[int, int], tokens: torch.Tensor | None = None,
                              boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's mask decoder on one image's ``[1, 256, g, g]`` embedding, N prompts at a time.

        ``tokens``: ``[N, out_dim]`` sparse prompt tokens (projected [SEG] states, point tokens);
        ``boxes``: ``[N, 4]`` (x0, y0, x1, y1) pixels in the SAM input frame (the resized image,
        before padding); one of them or both (then the box's two tokens come first). Single-mask
        output, no mask prompt. Returns ``[N, H_src, W_src]`` float32 logits at the source size
        (threshold 0) and ``[N]`` float32, the decoder's own estimate of each mask's IoU with the
        object (SAM's IoU head; LISA discards it). Raises ValueError when neither is given or
        their counts differ."""
        if tokens is None and boxes is None:
            raise ValueError("give tokens, boxes or both")
        count = len(tokens) if tokens is not None else len(boxes)
        if tokens is not None and boxes is not None and len(boxes) != count:
            raise ValueError(f"{len(tokens)} tokens but {len(boxes)} boxes")
        sam = self.visual_model
        encoder, decoder = sam.prompt_encoder, sam.mask_decoder
        dtype = image_embedding.dtype
        if count == 0:
            return (torch.zeros((0, *original_size), device=image_embedding.device),
                    torch.zeros(0, device=image_embedding.device))
        box_tokens = box_prompt_tokens(encoder, boxes) if boxes is not None else None
        logits, ious = [], []
        for index in range(count):  # the decoder repeats the image embedding per prompt: one at a time
            sparse, dense = encoder(points=None, boxes=None, masks=None)
            parts = [sparse.to(dtype)]
            if box_tokens is not None:
                parts.append(box_tokens[index:index + 1].to(dtype))
            if tokens is not None:
                parts.append(tokens[index].view(1, 1, -1).to(dtype))
            low_res, iou = decoder(
                image_embeddings=image_embedding,
                image_pe=dense_positional_encoding(encoder).to(dtype),
                sparse_prompt_embeddings=torch.cat(parts, dim=1),
                dense_prompt_embeddings=dense.to(dtype),
                multimask_output=False,
            )
            logits.append(postprocess_masks(low_res, resized_size, original_size, encoder.input_image_size[0]))
            ious.append(iou.float().reshape(1))
        return torch.cat(logits, dim=0), torch.cat(ious)
