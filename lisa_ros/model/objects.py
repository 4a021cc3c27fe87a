"""The object encoder of the embedded model: what its language model sees of an image.

LISA's language model reads CLIP patch features. No CLIP weights can be had here, and a small
language model trained for a few CPU hours does not learn to read raw patch features (see
training/README.md). The embedded model (``mm_vision_source: objects``) reads *object phrases*:

1. :class:`ObjectEncoder`, a small CNN over the SAM-preprocessed image, finds the objects the way
   CenterNet does (Zhou et al., 2019): on a ``grid`` x ``grid`` map it predicts a centre heatmap
   and, per cell, the colour and shape of the object centred there, its area and the offset of
   its centre within the cell. The centre is the pixel deepest inside the object (a cup's
   centroid lies outside it), so a point prompt there is on the object.
2. :func:`detect` keeps the ``max_objects`` strongest peaks (3x3 local maxima above a threshold),
   in reading order (top to bottom, left to right).
3. :func:`phrase_features` turns each object into a phrase of visual words
   (:data:`VISUAL_WORDS`): size, colour, shape, row, column and a comma ("large red square top
   left ,"); empty slots say "none". Each token's features are the word (one-hot) and SAM's
   positional encoding of the object's centre. ``mm_projector`` starts as the language model's
   own embeddings of those words, so the model reads the image as text from the first training
   step; the positional part lets the state that predicts ``[SEG]`` carry where the object is,
   in the mask decoder's own terms.

Everything here is ROS-free and differentiable except :func:`detect` (a selection).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SIZE_WORDS = ("tiny", "small", "medium", "large", "huge")
# Upper edges of the size words, as a fraction of the image's area (ratio ~1.8 between edges).
SIZE_EDGES = (0.012, 0.022, 0.04, 0.072)
COLOUR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "white", "black")
SHAPE_WORDS = ("ball", "square", "triangle", "star", "cup", "bar", "cross")
ROW_WORDS = ("top", "middle", "bottom")
COLUMN_WORDS = ("left", "center", "right")
SEPARATOR, EMPTY = ",", "none"
VISUAL_WORDS = SIZE_WORDS + COLOUR_WORDS + SHAPE_WORDS + ROW_WORDS + COLUMN_WORDS + (SEPARATOR, EMPTY)
WORDS_PER_OBJECT = 6  # size colour shape row column ","


def size_word(area_fraction: float) -> str:
    """The size word of an object covering ``area_fraction`` of the image."""
    for edge, word in zip(SIZE_EDGES, SIZE_WORDS):
        if area_fraction < edge:
            return word
    return SIZE_WORDS[-1]


def thirds(value: float) -> int:
    """0, 1 or 2: the third of [0, 1) ``value`` falls in."""
    return min(2, max(0, int(3 * value)))


def _conv(channels_in: int, channels_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: no running statistics, so the weights are the whole state.
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, dilation, dilation),
                         nn.GroupNorm(8, channels_out), nn.GELU())


class ObjectEncoder(nn.Module):
    """``[B, 3, S, S]`` SAM-preprocessed pixels -> per-cell object maps on a ``S/16`` grid.

    Returns a dict: ``heatmap`` ``[B, 1, g, g]`` logits (an object's centre in the cell),
    ``colour`` ``[B, len(COLOUR_WORDS), g, g]`` and ``shape`` ``[B, len(SHAPE_WORDS), g, g]``
    logits, ``log_area`` ``[B, 1, g, g]`` (log of the object's area as a fraction of the S x S
    input), ``offset`` ``[B, 2, g, g]`` (x, y of the centre within the cell, in [0, 1]).
    Receptive field about 120 px of the input, enough for the largest objects at S = 256.
    """

    def __init__(self, width: int = 96):
        super().__init__()
        self.body = nn.Sequential(
            _conv(3, 32, 2), _conv(32, 64, 2), _conv(64, 64), _conv(64, width, 2), _conv(width, width),
            _conv(width, width, 2), _conv(width, width, dilation=2), _conv(width, width, dilation=2))
        self.heads = nn.Conv2d(width, 1 + len(COLOUR_WORDS) + len(SHAPE_WORDS) + 1 + 2, 1)

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.heads(self.body(pixels))
        c, s = len(COLOUR_WORDS), len(SHAPE_WORDS)
        return {"heatmap": out[:, :1], "colour": out[:, 1:1 + c], "shape": out[:, 1 + c:1 + c + s],
                "log_area": out[:, 1 + c + s:2 + c + s], "offset": torch.sigmoid(out[:, 2 + c + s:])}


@dataclass
class DetectedObject:
    """One object: ``score`` in [0, 1]; ``x``, ``y`` its centre in the SAM input frame, normalised
    to [0, 1] of the padded square; ``colour``/``shape`` words; ``area`` as a fraction of the
    padded square."""

    score: float
    x: float
    y: float
    colour: str
    shape: str
    area: float


@torch.no_grad()
def detect(maps: dict[str, torch.Tensor], max_objects: int, threshold: float = 0.3) -> list[list[DetectedObject]]:
    """The objects of each image of ``maps`` (from :class:`ObjectEncoder`), at most
    ``max_objects`` per image, strongest first then sorted in reading order (by row third, then x)."""
    heat = torch.sigmoid(maps["heatmap"].float())
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
    grid = heat.shape[-1]
    images = []
    for b in range(heat.shape[0]):
        scores, cells = peaks[b, 0].flatten().topk(min(max_objects, grid * grid))
        found = []
        for score, cell in zip(scores.tolist(), cells.tolist()):
            if score < threshold:
                break
            row, col = divmod(cell, grid)
            dx, dy = maps["offset"][b, :, row, col].float().tolist()
            found.append(DetectedObject(
                score, (col + dx) / grid, (row + dy) / grid,
                COLOUR_WORDS[int(maps["colour"][b, :, row, col].argmax())],
                SHAPE_WORDS[int(maps["shape"][b, :, row, col].argmax())],
                math.exp(float(maps["log_area"][b, 0, row, col]))))
        images.append(sorted(_merge_duplicates(found), key=lambda o: (thirds(o.y), o.x)))
    return images


def _merge_duplicates(found: list[DetectedObject]) -> list[DetectedObject]:
    """Drop a detection when a stronger one of the same colour and shape lies within the object's
    own size (a long bar has a ridge of centres, not one peak). ``found`` is strongest first."""
    kept: list[DetectedObject] = []
    for obj in found:
        reach = 1.2 * math.sqrt(obj.area)
        if not any(k.colour == obj.colour and k.shape == obj.shape and math.hypot(k.x - obj.x, k.y - obj.y) < reach
                   for k in kept):
            kept.append(obj)
    return kept


def object_words(obj: DetectedObject, resized_size: tuple[int, int], image_size: int) -> tuple[str, ...]:
    """The phrase of one object: size, colour, shape, row, column, separator. Rows, columns and
    the size are relative to the unpadded image (``resized_size`` = (h, w) inside the
    ``image_size`` square)."""
    h, w = resized_size
    x_image, y_image = obj.x * image_size / w, obj.y * image_size / h
    area_image = obj.area * image_size * image_size / (h * w)
    return (size_word(area_image), obj.colour, obj.shape, ROW_WORDS[thirds(y_image)], COLUMN_WORDS[thirds(x_image)],
            SEPARATOR)


def phrase_features(objects: list[list[DetectedObject]], resized_sizes: list[tuple[int, int]], image_size: int,
                    max_objects: int, position_encoding) -> torch.Tensor:
    """``[B, max_objects * WORDS_PER_OBJECT, len(VISUAL_WORDS) + C]``: per token the one-hot of
    its visual word and ``position_encoding(xy)`` (``[N, 2]`` normalised (x, y) -> ``[N, C]``,
    SAM's PE) of its object's centre; empty slots say "none" with no position."""
    rows = []
    for found, resized in zip(objects, resized_sizes):
        words, points = [], []
        for obj in found[:max_objects]:
            phrase = object_words(obj, resized, image_size)
            words += [VISUAL_WORDS.index(word) for word in phrase]
            points += [(obj.x, obj.y)] * len(phrase)
        empty = max_objects * WORDS_PER_OBJECT - len(words)
        words += [VISUAL_WORDS.index(EMPTY)] * empty
        one_hot = F.one_hot(torch.tensor(words), len(VISUAL_WORDS)).float()
        if points:
            encoded = position_encoding(torch.tensor(points, dtype=torch.float32)).float().cpu()
        else:
            encoded = torch.zeros(0, 0)
        position = torch.zeros(len(words), encoded.shape[1] if points else _pe_width(position_encoding))
        if points:
            position[:len(points)] = encoded
        rows.append(torch.cat([one_hot, position], dim=1))
    return torch.stack(rows)


def _pe_width(position_encoding) -> int:
    return int(position_encoding(torch.zeros(1, 2)).shape[-1])
