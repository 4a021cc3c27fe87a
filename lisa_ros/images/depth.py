"""Depth images to metres: raw 16UC1/32FC1 and compressed_depth_image_transport's messages."""
from __future__ import annotations

import numpy as np

from lisa_ros.errors import ImageConversionError
from lisa_ros.images.compressed import compressed_depth_to_meters
from lisa_ros.images.encodings import CompressedFields, RawImage
from lisa_ros.images.raw import image_to_numpy


def is_compressed(msg) -> bool:
    """Whether ``msg`` has CompressedImage's fields (``format``, no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def depth_to_meters(msg: RawImage | CompressedFields, max_pixels: int | None = None,
                    depth_scale: float = 0.001) -> np.ndarray:
    """Decode a depth image to ``(H, W)`` float32 metres; NaN where there is no measurement.

    ``16UC1``/``mono16`` are ``depth_scale`` metres per unit (REP 118: millimetres, 0.001; some
    drivers use other units) with 0 = no return; ``32FC1`` is metres with 0, negative, NaN and
    inf = no return. A CompressedImage must come from compressed_depth_image_transport (see
    ``compressed_depth_to_meters``); the same units and rules apply to what it carries.
    Raises ImageConversionError for any other encoding or format, more than ``max_pixels``
    pixels, or malformed data.
    """
    if is_compressed(msg):
        depth = compressed_depth_to_meters(msg, max_pixels, depth_scale)
    elif msg.encoding in ("16UC1", "mono16"):
        depth = image_to_numpy(msg, max_pixels).astype(np.float32) * np.float32(depth_scale)
    elif msg.encoding == "32FC1":
        depth = image_to_numpy(msg, max_pixels).astype(np.float32, copy=False)
    else:
        raise ImageConversionError(
            f"unsupported depth encoding {msg.encoding!r} (expected 16UC1 in mm or 32FC1 in m)"
        )
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth
