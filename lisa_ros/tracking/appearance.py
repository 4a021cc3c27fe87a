"""What an object looks like against what surrounds it: a discriminative colour model.

A histogram of the object's colours over the histogram of a ring of pixels around it (the ratio
CamShift-style trackers back-project): a pixel whose colour is more common on the object than
around it is the object's. Used two ways: inside the followed shape, to tell visible pixels from
an occluder (:meth:`ColourModel.object_pixels`), and to tell whether a mask found again is the
same object (:meth:`ColourModel.similarity`). Colours are quantised to ``BINS`` levels per
channel of RGB.
"""
from __future__ import annotations

import cv2
import numpy as np

BINS = 16
RING_PX = 12  # width of the surrounding ring, in working-size pixels


def colour_histogram(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(BINS, BINS, BINS)`` float32 histogram of ``rgb`` (uint8 ``(h, w, 3)``) under ``mask``,
    summing to 1 (all zeros for an empty mask)."""
    hist = cv2.calcHist([rgb], [0, 1, 2], mask.astype(np.uint8), [BINS] * 3, [0, 256] * 3)
    total = float(hist.sum())
    return hist / total if total > 0 else hist


class ColourModel:
    """``object_hist`` and ``ring_hist``: :func:`colour_histogram` of the object and of the ring."""

    def __init__(self, object_hist: np.ndarray, ring_hist: np.ndarray):
        self.object_hist = object_hist
        self.ring_hist = ring_hist
        # P(colour | object) / (P(colour | object) + P(colour | ring)), flat over the colour bins.
        self._ratio = (object_hist / (object_hist + ring_hist + 1e-6)).ravel()

    @classmethod
    def from_mask(cls, rgb: np.ndarray, mask: np.ndarray) -> "ColourModel":
        """The model of the object under ``mask`` (bool ``(h, w)``) in ``rgb``."""
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING_PX + 1, 2 * RING_PX + 1))
        ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
        return cls(colour_histogram(rgb, mask), colour_histogram(rgb, ring))

    def blend(self, other: "ColourModel", weight: float) -> "ColourModel":
        """``(1 - weight) * self + weight * other``, for slow adaptation to lighting."""
        return ColourModel((1 - weight) * self.object_hist + weight * other.object_hist,
                           (1 - weight) * self.ring_hist + weight * other.ring_hist)

    def object_pixels(self, rgb: np.ndarray, region: np.ndarray) -> np.ndarray:
        """Bool ``(h, w)``: the pixels of ``region`` whose colour is more the object's than its
        surroundings' (ratio > 0.5). Only the region's bounding box is read."""
        found = np.zeros(region.shape, bool)
        if not region.any():
            return found
        x, y, w, h = cv2.boundingRect(region.astype(np.uint8))
        patch = rgb[y:y + h, x:x + w] // (256 // BINS)
        index = (patch[..., 0].astype(np.intp) * BINS + patch[..., 1]) * BINS + patch[..., 2]
        found[y:y + h, x:x + w] = region[y:y + h, x:x + w] & (self._ratio[index] > 0.5)
        return found

    def similarity(self, other: "ColourModel") -> float:
        """Bhattacharyya coefficient of the two objects' colour histograms, in [0, 1] (1 = same)."""
        return float(np.sqrt(self.object_hist * other.object_hist).sum())
