"""Drawing results on images (the CLI's overlay.png and, later, the node's debug image). ROS-free."""
from __future__ import annotations

import cv2
import numpy as np

# Distinct, colour-blind-friendly colours (Okabe-Ito), RGB; mask i uses PALETTE[i % len].
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
           (0, 114, 178), (213, 94, 0), (204, 121, 167)]


def draw_overlay(rgb: np.ndarray, masks: list[np.ndarray], boxes: list[tuple[int, int, int, int]],
                 scores: list[float], text: str = "", alpha: float = 0.45, labels: list[str] | None = None,
                 colours: list[int] | None = None) -> np.ndarray:
    """The image with each mask tinted, its box and score drawn, and ``text`` in a banner.

    rgb: ``(H, W, 3)`` uint8; masks: ``(H, W)`` bool; boxes: (x, y, w, h). ``labels``: the text
    beside each box (default ``"#i score"``); ``colours``: each mask's palette index (default
    its position; a track passes its object ids so that colours stay with objects). Returns a
    new array.
    """
    out = rgb.astype(np.float32).copy()
    colours = list(range(len(masks))) if colours is None else colours
    for index, mask in enumerate(masks):
        colour = np.array(PALETTE[colours[index] % len(PALETTE)], np.float32)
        out[mask] = out[mask] * (1 - alpha) + colour * alpha
    out = out.clip(0, 255).astype(np.uint8)
    scale = max(0.4, min(out.shape[:2]) / 800)
    thickness = max(1, int(round(scale * 2)))
    for index, ((x, y, w, h), score) in enumerate(zip(boxes, scores)):
        if w == 0 or h == 0:
            continue
        colour = PALETTE[colours[index] % len(PALETTE)]
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        label = f"#{index} {score:.2f}" if labels is None else labels[index]
        cv2.putText(out, label, (x + 2, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale * 0.6, colour, thickness, cv2.LINE_AA)
    if text:
        banner = text if len(text) <= 120 else text[:117] + "..."
        height = int(28 * scale) + 6
        out[:height] = (out[:height].astype(np.float32) * 0.35).astype(np.uint8)
        cv2.putText(out, banner, (6, height - 8), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6,
                    (255, 255, 255), max(1, thickness - 1), cv2.LINE_AA)
    return out
