"""LISA's training losses (docs/MODEL.md §5.2): causal-LM cross-entropy plus per-mask BCE and DICE.

Mask losses are computed on logits at the original image size, averaged over all masks of the
micro-batch; total = ce_weight * CE + bce_weight * BCE + dice_weight * DICE (1.0, 2.0, 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class LossWeights:
    ce: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    point: float = 0.0  # ours: [SEG] prompt vs the target's point-prompt token (see point_prompts.py)


def mask_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of the binary cross-entropy with logits, for one mask ``[H, W]``."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="mean")


def mask_dice(logits: torch.Tensor, target: torch.Tensor, scale: float = 1000.0, eps: float = 1e-6) -> torch.Tensor:
    """1 - (2 sum(p/s * t) + eps) / (sum(p/s) + sum(t/s) + eps), p = sigmoid(logits), one mask."""
    p = torch.sigmoid(logits.float()).flatten()
    t = target.float().flatten()
    numerator = 2 * (p / scale * t).sum()
    denominator = (p / scale).sum() + (t / scale).sum()
    return 1 - (numerator + eps) / (denominator + eps)


def causal_lm_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the non-ignored labels, and their count.

    logits ``[L, V]`` and labels ``[L]`` over the expanded sequence; position t predicts t + 1.
    """
    shifted_logits, shifted_labels = logits[:-1].float(), labels[1:]
    count = int((shifted_labels != IGNORE_INDEX).sum())
    if count == 0:
        return logits.sum() * 0.0, 0
    loss = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, count


def supervised_cross_entropy(hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """:func:`causal_lm_cross_entropy` of ``lm_head(hidden)``, evaluating the head only at the
    positions that predict a supervised label (the answer: a few of the L positions; the head is
    the largest matrix of a small model, so this saves most of its cost).

    hidden ``[L, H]``, labels ``[L]`` over the expanded sequence.
    """
    predicting = (labels[1:] != IGNORE_INDEX).nonzero().flatten()
    if predicting.numel() == 0:
        return hidden.sum() * 0.0, 0
    logits = lm_head(hidden[predicting]).float()
    return F.cross_entropy(logits, labels[predicting + 1], reduction="sum"), int(predicting.numel())


def combine(ce_sum: torch.Tensor, ce_count: int, mask_logits: list[torch.Tensor], targets: list[torch.Tensor],
            weights: LossWeights, point_errors: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The micro-batch loss: CE mean over all supervised tokens; BCE and DICE means over all masks;
    with ``point_errors`` (one mean squared error per [SEG] prompt) their mean, weighted by ``point``."""
    ce = ce_sum / max(ce_count, 1)
    if mask_logits:
        bce = torch.stack([mask_bce(x, t) for x, t in zip(mask_logits, targets)]).sum() / (len(mask_logits) + 1e-8)
        dice = torch.stack([mask_dice(x, t) for x, t in zip(mask_logits, targets)]).sum() / (len(mask_logits) + 1e-8)
    else:
        bce = dice = ce * 0.0
    total = weights.ce * ce + weights.bce * bce + weights.dice * dice
    parts = {"loss": total, "ce": ce, "bce": bce, "dice": dice}
    if point_errors is not None:
        point = torch.stack(point_errors).mean() if point_errors else ce * 0.0
        parts["point"] = point
        parts["loss"] = total + weights.point * point
    return parts
