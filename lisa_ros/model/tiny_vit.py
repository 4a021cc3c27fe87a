"""TinyViT image encoder (Wu et al., 2022) with a SAM neck, shaped for LiteMedSAM's weights.

LiteMedSAM (MedSAM's distilled model, Apache-2.0) replaces SAM's ViT image encoder with a
small hierarchical TinyViT that turns a 256x256 image into the same ``[B, 256, 64, 64]``
embedding SAM's prompt encoder and mask decoder expect. This module is written from the
architecture's description and from the tensor names and shapes in ``lite_medsam.pth``; its
``state_dict()`` has exactly the keys of that file under ``image_encoder.``.

Layout (defaults, read off the checkpoint)::

    [B, 3, 256, 256]
      patch_embed   two 1x1 Conv+BN (3 -> 32 -> 64), GELU between, stride 1   -> [B,  64, 256, 256]
      layers.0      2 MBConv blocks (expand 4), PatchMerging stride 2           -> [B, 128x128,  128]
      layers.1      2 attention blocks, 4 heads, window 7, PatchMerging /2      -> [B,  64x64,   160]
      layers.2      6 attention blocks, 5 heads, window 14, PatchMerging /1     -> [B,  64x64,   320]
      layers.3      2 attention blocks, 10 heads, window 7                      -> [B,  64x64,   320]
      neck          1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d                -> [B, 256, 64, 64]

Stage 0 works on ``[B, C, H, W]`` maps; the attention stages on token sequences ``[B, H*W, C]``
(row-major). BatchNorm layers stay real ``BatchNorm2d`` modules, so the state dict keeps the
checkpoint's keys; call ``eval()`` before inference.

Inference (``eval()``) takes a faster path with the same arithmetic up to float rounding
(``bench/embedded.py`` times it against the plain path): each BatchNorm is folded into its
convolution's weight and bias on the fly, the maps are channels-last, and the full-resolution
MBConv blocks run in bands of rows, so that their 4x-expanded hidden map (64 MB for one 256 px image)
is never materialised: the CPU keeps a band in cache instead of streaming the whole map through
memory four times. Training mode runs the plain layer-by-layer path (BatchNorm statistics), and
:func:`set_fast_inference` switches the faster path off (benchmarks and tests compare the two).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBN(nn.Sequential):
    """``Conv2d`` without bias followed by ``BatchNorm2d`` (children ``c`` and ``bn``).

    ``[B, in_ch, H, W] -> [B, out_ch, H', W']`` with ``H' = (H + 2 * padding - kernel) // stride + 1``.
    In ``eval()`` the BatchNorm is folded into the convolution (one pass over the map instead of two).
    """

    fast_inference = True

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch))

    def folded(self) -> tuple[Tensor, Tensor]:
        """The convolution weight ``[out, in / groups, k, k]`` and bias ``[out]`` that equal conv
        then BatchNorm with its running statistics. Written out rather than taken from
        ``torch.nn.utils.fusion.fuse_conv_bn_weights``, which returns new leaf Parameters and so
        would cut gradients to the module's own weights."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.c.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        if self.training or not self.fast_inference:
            return self.bn(self.c(x))
        weight, bias = self.folded()
        conv = self.c
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class PatchEmbed(nn.Module):
    """Stem: ``ConvBN -> GELU -> ConvBN`` (children ``seq.0``, ``seq.1``, ``seq.2``).

    ``[B, in_chans, H, W] -> [B, embed_dim, H / s, W / s]`` with ``s = stride ** 2``; the first
    conv produces ``embed_dim // 2`` channels.
    """

    def __init__(self, in_chans: int, embed_dim: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        padding = kernel // 2
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, kernel, stride, padding),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, kernel, stride, padding),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU.

    ``[B, C, H, W] -> [B, C, H, W]``; the hidden width is ``C * expand_ratio``. In ``eval()`` the
    map is processed in bands of ``band_rows`` rows (each with one row of context above and below
    for the 3x3 depthwise convolution), channels-last; ``band_rows=0`` turns banding off.
    """

    band_rows = 16  # 16 rows of a 256-wide map with 256 hidden channels: a 4 MB hidden band
    fast_inference = True

    def __init__(self, dim: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.fast_inference and self.band_rows and x.shape[2] > self.band_rows:
            return self._forward_banded(x.contiguous(memory_format=torch.channels_last))
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(x + self.conv3(y))

    def _forward_banded(self, x: Tensor) -> Tensor:
        """The same block, ``band_rows`` output rows at a time. A band's hidden map is computed
        for its rows plus one context row on each side inside the image; the depthwise
        convolution then zero-pads by one as usual, and of its outputs only the band's own rows
        are kept (at the image's top and bottom edges the zero padding is the original padding;
        elsewhere the padded rows feed only outputs that are dropped)."""
        height = x.shape[2]
        out = torch.empty_like(x)
        for top in range(0, height, self.band_rows):
            bottom = min(top + self.band_rows, height)
            first, last = max(top - 1, 0), min(bottom + 1, height)
            hidden = self.act(self.conv1(x[:, :, first:last]))
            hidden = self.act(self.conv2(hidden))[:, :, top - first:top - first + bottom - top]
            out[:, :, top:bottom] = self.act(x[:, :, top:bottom] + self.conv3(hidden))
        return out


class PatchMerging(nn.Module):
    """Downsampling between stages: 1x1 ConvBN, GELU, 3x3 depthwise ConvBN (``stride``), GELU, 1x1 ConvBN.

    Accepts a map ``[B, C, H, W]`` or tokens ``[B, H*W, C]`` (with ``resolution=(H, W)``) and
    returns tokens ``[B, H'*W', out_dim]``, ``H' = ceil(H / stride)``.
    """

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = tokens_to_map(x, self.resolution)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)  # a channels-last map gives contiguous tokens here, without a copy


def tokens_to_map(tokens: Tensor, resolution: tuple[int, int]) -> Tensor:
    """Row-major tokens ``[B, H*W, C]`` -> the map ``[B, C, H, W]`` as a channels-last view of the
    same memory (no copy when ``tokens`` is contiguous)."""
    height, width = resolution
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def relative_offset_index(window: int) -> Tensor:
    """``[N, N]`` long tensor (``N = window ** 2``) giving, for tokens i and j of a window
    (row-major), the bias slot of their offset: ``|row_i - row_j| * window + |col_i - col_j|``.

    Offsets are symmetric (absolute values), so a window has ``window ** 2`` distinct ones.
    """
    coords = torch.tensor(list(itertools.product(range(window), range(window))))  # [N, 2]
    delta = (coords[:, None, :] - coords[None, :, :]).abs()
    return delta[..., 0] * window + delta[..., 1]


class Attention(nn.Module):
    """Multi-head self-attention inside one window, with pre-LayerNorm and learned biases.

    ``[B', N, C] -> [B', N, C]`` with ``N = window ** 2``. ``qkv`` emits, for each head in turn,
    its query, key and value (``head_dim`` each). ``attention_biases`` is ``[heads, window ** 2]``:
    one learned scalar per head and per absolute (row, col) offset, added to the logits.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        # Built on first use, not in a buffer: from_pretrained builds modules on the meta device and
        # only fills what the checkpoint holds, so a non-persistent buffer would stay garbage.
        self.window = window
        self._bias_index: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each [B', heads, N, head_dim]
        if self._bias_index is None or self._bias_index.device != x.device:
            self._bias_index = relative_offset_index(self.window).to(x.device)
        bias = self.attention_biases[:, self._bias_index]  # [heads, N, N], added to the logits
        # softmax(q k^T * head_dim ** -0.5 + bias) v: SDPA's default scale
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """Pre-LayerNorm two-layer MLP with GELU: ``[..., C] -> [..., C]`` (hidden ``C * ratio``)."""

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), then a 3x3 depthwise ConvBN on the map, then MLP (residual).

    ``[B, H*W, C] -> [B, H*W, C]`` for ``resolution=(H, W)``. The map is zero-padded bottom/right
    to a multiple of ``window`` before being cut into windows; padded tokens take part in the
    attention (no mask) and are dropped afterwards.
    """

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int,
                 mlp_ratio: float = 4.0, local_conv_size: int = 3) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def _windowed_attention(self, x: Tensor) -> Tensor:
        batch, _, dim = x.shape
        height, width = self.resolution
        w = self.window
        grid = x.view(batch, height, width, dim)
        pad_h, pad_w = (-height) % w, (-width) % w
        if pad_h or pad_w:
            grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // w, (width + pad_w) // w
        windows = grid.view(batch, rows, w, cols, w, dim).transpose(2, 3).reshape(-1, w * w, dim)
        windows = self.attn(windows)
        grid = windows.view(batch, rows, cols, w, w, dim).transpose(2, 3).reshape(batch, rows * w, cols * w, dim)
        return grid[:, :height, :width].reshape(batch, height * width, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self._windowed_attention(x)
        x = self.local_conv(tokens_to_map(x, self.resolution)).flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class _Stage(nn.Module):
    """Blocks in sequence, then the optional PatchMerging (subclasses build ``blocks``)."""

    blocks: nn.ModuleList
    downsample: nn.Module | None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class ConvStage(_Stage):
    """Stage of MBConv blocks on a map, then optional PatchMerging.

    ``[B, C, H, W] -> [B, H'*W', C_next]`` (tokens) when ``downsample`` is set, else ``[B, C, H, W]``.
    """

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample


class AttentionStage(_Stage):
    """Stage of TinyViT blocks on tokens, then optional PatchMerging.

    ``[B, H*W, C] -> [B, H'*W', C_next]``.
    """

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window: int,
                 mlp_ratio: float, local_conv_size: int, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = downsample


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, H, W]`` (eps 1e-6, SAM's neck convention)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def sam_neck(in_chans: int, out_chans: int) -> nn.Sequential:
    """``[B, in_chans, H, W] -> [B, out_chans, H, W]``: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 1, bias=False),
        LayerNorm2d(out_chans),
        nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
        LayerNorm2d(out_chans),
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def set_fast_inference(encoder: nn.Module, enabled: bool) -> None:
    """Switch eval()'s faster path (folded BatchNorm, channels-last maps, banded MBConv) on or off
    in every TinyViT part of ``encoder``. Both paths compute the same function (test_tiny_vit.py
    bounds the difference); ``bench/embedded.py`` times one against the other."""
    for module in encoder.modules():
        if isinstance(module, (ConvBN, MBConv, TinyViT)):
            module.fast_inference = enabled


class TinyViT(nn.Module):
    """TinyViT image encoder with a SAM neck: ``[B, 3, img_size, img_size] -> [B, out_chans, G, G]``.

    ``G = img_size / (patch_stride ** 2 * prod(merge_strides))`` (64 with the LiteMedSAM defaults).
    Stage 0 is convolutional (MBConv); stages 1.. are windowed-attention stages whose
    ``num_heads[i]``/``window_sizes[i]`` apply (entry 0 of both is unused, kept for symmetry).
    ``merge_strides[i]`` is the stride of the PatchMerging after stage ``i`` (the last stage has none).
    """

    fast_inference = True  # eval(): channels-last maps (set_fast_inference)

    def __init__(
        self,
        img_size: int = 256,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        patch_kernel: int = 1,
        patch_stride: int = 1,
        merge_strides: Sequence[int] = (2, 2, 1),
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes) == len(merge_strides) + 1:
            raise ValueError("embed_dims, depths, num_heads, window_sizes need one entry per stage, "
                             "merge_strides one fewer")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], patch_kernel, patch_stride)
        side = _ceil_div(_ceil_div(img_size, patch_stride), patch_stride)
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            downsample = None
            next_side = side
            if i < len(merge_strides):
                next_side = _ceil_div(side, merge_strides[i])
                downsample = PatchMerging((side, side), dim, embed_dims[i + 1], merge_strides[i])
            if i == 0:
                self.layers.append(ConvStage(dim, depth, mbconv_expand_ratio, downsample))
            else:
                self.layers.append(AttentionStage(dim, (side, side), depth, num_heads[i], window_sizes[i],
                                                  mlp_ratio, local_conv_size, downsample))
            side = next_side
        self.embedding_size = side
        self.neck = sam_neck(embed_dims[-1], out_chans)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, img_size, img_size]`` normalised pixels -> ``[B, out_chans, G, G]``."""
        if not self.training and self.fast_inference:
            x = x.contiguous(memory_format=torch.channels_last)  # the convolutions' fast layout on the CPU
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        if x.dim() == 3:  # tokens [B, G*G, C] -> map [B, C, G, G]
            x = tokens_to_map(x, (self.embedding_size, self.embedding_size))
        return self.neck(x).contiguous()
