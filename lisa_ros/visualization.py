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


def draw_series(xs: list[float], ys: list[float], title: str = "", x_label: str = "", size: tuple[int, int] = (900, 320),
                y_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A line plot of ``ys`` (within ``y_range``) over ``xs``, dots at the points, horizontal
    grid lines at the range's quarters, the x range's ends written under the axis. Returns
    ``(height, width, 3)`` uint8 RGB of ``size`` = (width, height)."""
    width, height = size
    out = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 50, 15, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = y_range
    x_low, x_high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    x_span = (x_high - x_low) or 1.0
    font, grey, ink = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200), (40, 40, 40)
    for k in range(5):
        value = low + (high - low) * k / 4
        y = top + plot_h - int(round(plot_h * k / 4))
        cv2.line(out, (left, y), (left + plot_w, y), grey, 1)
        cv2.putText(out, f"{value:.2f}", (4, y + 4), font, 0.4, ink, 1, cv2.LINE_AA)
    points = [(left + int(round(plot_w * (x - x_low) / x_span)),
               top + plot_h - int(round(plot_h * (min(max(y, low), high) - low) / ((high - low) or 1.0))))
              for x, y in zip(xs, ys)]
    if len(points) > 1:
        cv2.polylines(out, [np.array(points, np.int32)], False, PALETTE[4], 2, cv2.LINE_AA)
    for point in points:
        cv2.circle(out, point, 4, PALETTE[5], -1, cv2.LINE_AA)
    cv2.putText(out, title, (left, 20), font, 0.5, ink, 1, cv2.LINE_AA)
    cv2.putText(out, f"{x_low:.2f}", (left, height - 22), font, 0.4, ink, 1, cv2.LINE_AA)
    cv2.putText(out, f"{x_high:.2f}", (left + plot_w - 40, height - 22), font, 0.4, ink, 1, cv2.LINE_AA)
    cv2.putText(out, x_label, (left + plot_w // 2 - 4 * len(x_label), height - 8), font, 0.4, ink, 1, cv2.LINE_AA)
    return out


def _wrapped(text: str, width_px: int, scale: float) -> list[str]:
    """``text`` cut into lines of at most ``width_px`` pixels in OpenCV's simplex font."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width_px:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def contact_sheet(tiles: list[np.ndarray], captions: list[str], columns: int = 3, tile_width: int = 320) -> np.ndarray:
    """The ``tiles`` (``(H, W, 3)`` uint8 RGB, e.g. overlays) on a grid of ``columns``, each scaled
    to ``tile_width`` pixels wide with its caption (wrapped, dark on white) above it. Returns
    ``(height, width, 3)`` uint8 RGB. Raises ValueError when tiles and captions differ in number
    or there is no tile."""
    if not tiles or len(tiles) != len(captions):
        raise ValueError(f"{len(tiles)} tiles and {len(captions)} captions: one caption per tile, at least one")
    if columns < 1 or tile_width < 8:
        raise ValueError(f"columns {columns} and tile_width {tile_width}: at least 1 column of 8 pixels")
    scale, gap, line_h = 0.45, 8, 16
    scaled = [cv2.resize(t, (tile_width, max(1, round(t.shape[0] * tile_width / t.shape[1]))),
                         interpolation=cv2.INTER_AREA) for t in tiles]
    wrapped = [_wrapped(c, tile_width - 4, scale) for c in captions]
    caption_h = line_h * max(len(w) for w in wrapped) + 6
    cell_h = caption_h + max(t.shape[0] for t in scaled)
    rows = -(-len(tiles) // columns)
    sheet = np.full((gap + rows * (cell_h + gap), gap + min(columns, len(tiles)) * (tile_width + gap), 3), 255, np.uint8)
    for index, (tile, lines) in enumerate(zip(scaled, wrapped)):
        x = gap + (index % columns) * (tile_width + gap)
        y = gap + (index // columns) * (cell_h + gap)
        caption = sheet[y:y + caption_h, x:x + tile_width]  # a view: a word wider than the tile is cut there
        for number, line in enumerate(lines):
            cv2.putText(caption, line, (2, line_h * (number + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (30, 30, 30), 1, cv2.LINE_AA)
        sheet[y + caption_h:y + caption_h + tile.shape[0], x:x + tile_width] = tile
    return sheet
