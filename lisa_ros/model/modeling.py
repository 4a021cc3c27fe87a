"""The LISA module tree, with the parameter names of the released checkpoints.

``LisaForCausalLM`` is transformers' ``LlamaForCausalLM`` whose body (``model``) also owns:

* ``model.mm_projector``: Linear(mm_hidden_size -> H), CLIP patch features into the LLM (or, for
  a ``mm_vision_source: sam`` checkpoint, the pooled SAM features of :meth:`sam_vision_features`);
* ``model.visual_model``: a segment-anything ``Sam`` (image encoder, prompt encoder, decoder);
* ``model.text_hidden_fcs``: ModuleList([Sequential(Linear(H, H), ReLU, Linear(H, out_dim),
  Dropout(0))]), which turns the hidden state that predicted ``[SEG]`` into a SAM prompt.

So ``state_dict()`` keys are exactly the released ones (``model.layers.*``, ``model.embed_tokens``,
``model.norm``, ``model.mm_projector``, ``model.visual_model.{image_encoder,prompt_encoder,
mask_decoder}``, ``model.text_hidden_fcs.0.{0,2}``, ``lm_head``). The CLIP vision tower is not in
released checkpoints and is deliberately not a submodule here: it is loaded on its own (see
``loading.py``), which keeps checkpoint loading strict.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from lisa_ros.model.configuration import LisaConfig
from lisa_ros.model.sam import build_sam


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


class LisaModel(LlamaModel):
    """The LLaMA decoder plus the LLaVA projector, SAM and the [SEG] projection."""

    config_class = LisaConfig

    def __init__(self, config: LisaConfig):
        super().__init__(config)
        self.mm_projector = nn.Linear(config.mm_hidden_size, config.hidden_size)
        self.visual_model = build_sam(config.sam)
        self.text_hidden_fcs = build_text_hidden_fcs(config.hidden_size, config.out_dim)


class LisaForCausalLM(LlamaForCausalLM):
    """LISA: LLaVA-v1 with a [SEG] token decoded into masks by SAM.

    Forward/generate are LlamaForCausalLM's, fed with ``inputs_embeds`` in which the image
    placeholder has been replaced by projected CLIP features (see ``engine.py``).
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

    @property
    def visual_model(self):
        return self.model.visual_model

    def project_seg_hidden_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[N, H]`` final post-norm hidden states that predicted [SEG] -> ``[N, out_dim]``."""
        projection = self.model.text_hidden_fcs[0]
        weight_dtype = projection[0].weight.dtype
        if weight_dtype.is_floating_point:  # quantized weights (uint8) take the input as it is
            hidden_states = hidden_states.to(weight_dtype)
        return projection(hidden_states)

    def sam_vision_features(self, image_embedding: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """The image tokens of a ``mm_vision_source: sam`` model, before the projector.

        ``image_embedding``: ``[B, C, g, g]`` SAM encoder output; ``pixels``: ``[B, 3, S, S]`` the
        normalised, padded SAM input. Returns ``[B, G*G, C + 3 + C]`` for G = mm_vision_grid: per
        cell (row-major) the mean SAM feature, the mean normalised colour (SAM features of small
        encoders carry little hue, and colour is what many commands are about) and SAM's own
        positional encoding of the cell centre, i.e. what a point prompt there would carry, so
        the [SEG] state can say *where* the target is in the decoder's own terms.
        """
        grid = self.config.mm_vision_grid
        features = F.adaptive_avg_pool2d(image_embedding, grid).flatten(2).transpose(1, 2)
        colour = F.adaptive_avg_pool2d(pixels.to(features.dtype), grid).flatten(2).transpose(1, 2)
        pe_layer = self.model.visual_model.prompt_encoder.pe_layer
        gaussian = pe_layer.positional_encoding_gaussian_matrix
        centres = (torch.arange(grid, device=gaussian.device, dtype=gaussian.dtype) + 0.5) / grid
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        position = pe_layer._pe_encoding(torch.stack([xs, ys], dim=-1)).reshape(1, grid * grid, -1)
        position = position.to(features.dtype).expand(features.shape[0], -1, -1)
        return torch.cat([features, colour, position], dim=-1)
