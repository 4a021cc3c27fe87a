"""The pixel layouts of sensor_msgs/Image encodings (image_encodings.hpp and OpenCV types), and
the fields a raw or compressed image message has, whoever built it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lisa_ros.errors import ImageConversionError


class CompressedFields(Protocol):
    """What decoding reads from a ``sensor_msgs/CompressedImage``: ``format`` and ``data``."""

    format: str
    data: bytes  # or a uint8 array (rosbags)


@dataclass
class RawImage:
    """The fields of a ``sensor_msgs/Image`` that decoding reads and packing writes
    (:func:`~lisa_ros.images.raw.pack_image`). Decoders take any object with them: an rclpy
    message, a message read from a bag by ``rosbags`` (``data`` a uint8 array), or this."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes  # or a uint8 array (rosbags)


@dataclass(frozen=True)
class ImageFormat:
    """How one ``sensor_msgs/Image`` encoding lays out its pixels.

    ``layout`` is one of: ``rgb``, ``bgr``, ``rgba``, ``bgra``, ``mono``, ``uyvy``, ``yuyv``,
    ``bayer_rggb``, ``bayer_bggr``, ``bayer_gbrg``, ``bayer_grbg``, ``raw`` (2-channel data
    with no colour meaning), or the semi-planar ``nv12``, ``nv21`` (YUV 4:2:0: a Y plane of
    ``height`` rows of ``step`` bytes, then ``height / 2`` rows of interleaved chroma, U first for
    NV12) and ``nv24`` (YUV 4:4:4: the Y plane, then ``height`` rows of ``2 * step`` bytes of
    interleaved U, V). For these ``channels`` counts the Y plane only.
    """

    dtype: np.dtype
    channels: int
    layout: str

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


_U8, _U16 = np.dtype(np.uint8), np.dtype(np.uint16)

# Named encodings of sensor_msgs/image_encodings.hpp. "yuv422" is UYVY byte order; "yuv422_yuy2"
# and "yuyv" are YUYV (what usb_cam publishes).
_NAMED: dict[str, ImageFormat] = {
    "rgb8": ImageFormat(_U8, 3, "rgb"),
    "bgr8": ImageFormat(_U8, 3, "bgr"),
    "rgba8": ImageFormat(_U8, 4, "rgba"),
    "bgra8": ImageFormat(_U8, 4, "bgra"),
    "rgb16": ImageFormat(_U16, 3, "rgb"),
    "bgr16": ImageFormat(_U16, 3, "bgr"),
    "rgba16": ImageFormat(_U16, 4, "rgba"),
    "bgra16": ImageFormat(_U16, 4, "bgra"),
    "mono8": ImageFormat(_U8, 1, "mono"),
    "mono16": ImageFormat(_U16, 1, "mono"),
    "yuv422": ImageFormat(_U8, 2, "uyvy"),
    "uyvy": ImageFormat(_U8, 2, "uyvy"),
    "yuv422_yuy2": ImageFormat(_U8, 2, "yuyv"),
    "yuyv": ImageFormat(_U8, 2, "yuyv"),
    # Semi-planar YUV (camera_ros on a Raspberry Pi, OAK cameras): image_encodings' NV21 and NV24,
    # and NV12 (NV21 with U first).
    "nv12": ImageFormat(_U8, 1, "nv12"),
    "nv21": ImageFormat(_U8, 1, "nv21"),
    "nv24": ImageFormat(_U8, 1, "nv24"),
}
# Bytes of a semi-planar image as a multiple of step x height: (numerator, denominator).
PLANAR_SIZE = {"nv12": (3, 2), "nv21": (3, 2), "nv24": (3, 1)}
for _pattern in ("rggb", "bggr", "gbrg", "grbg"):
    _NAMED[f"bayer_{_pattern}8"] = ImageFormat(_U8, 1, f"bayer_{_pattern}")
    _NAMED[f"bayer_{_pattern}16"] = ImageFormat(_U16, 1, f"bayer_{_pattern}")

# OpenCV-style "<bits><U|S|F>C<n>" encodings. Three channels are BGR, four BGRA (OpenCV order).
_CV_TYPE = re.compile(r"^(8|16|32|64)([USF])C([1-4])$")
_CV_DTYPES = {
    ("8", "U"): np.uint8,
    ("8", "S"): np.int8,
    ("16", "U"): np.uint16,
    ("16", "S"): np.int16,
    ("32", "S"): np.int32,
    ("32", "F"): np.float32,
    ("64", "F"): np.float64,
}
_CV_LAYOUTS = {1: "mono", 2: "raw", 3: "bgr", 4: "bgra"}


def supported_encodings() -> list[str]:
    """The named encodings plus every OpenCV-style ``<bits><U|S|F>C<n>`` type we accept."""
    cv_types = [f"{bits}{kind}C{n}" for (bits, kind) in _CV_DTYPES for n in range(1, 5)]
    return sorted(_NAMED) + cv_types


def image_format(encoding: str) -> ImageFormat:
    """The pixel layout of ``encoding``; raises ImageConversionError when unsupported."""
    fmt = _NAMED.get(encoding)
    if fmt is not None:
        return fmt
    match = _CV_TYPE.fullmatch(encoding or "")
    if match:
        bits, kind, channels = match.group(1), match.group(2), int(match.group(3))
        dtype = _CV_DTYPES.get((bits, kind))
        if dtype is not None:
            return ImageFormat(np.dtype(dtype), channels, _CV_LAYOUTS[channels])
    if not encoding:
        raise ImageConversionError("image has an empty encoding")
    raise ImageConversionError(
        f"unsupported image encoding {encoding!r} (supported: {', '.join(sorted(_NAMED))}, "
        "and OpenCV types such as 8UC3, 16UC1, 32FC1)"
    )
