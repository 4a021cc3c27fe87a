"""sensor_msgs/Image and CompressedImage rclpy messages <-> numpy.

Decoding is :mod:`lisa_ros.images` (ROS-free, re-exported here: the same functions decode a
message received by the node and one read from a bag); this module builds the rclpy messages
the node publishes. Every function raises :class:`ImageConversionError` (a ``LisaError`` and a
``ValueError``), and only that, for anything inconsistent: callers turn it into a
``success=false`` answer.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lisa_ros.images import (
    ImageConversionError,
    ImageFormat,
    compress,
    compress_depth,
    compressed_to_numpy,
    compressed_to_rgb8,
    depth_to_meters,
    image_format,
    image_to_numpy,
    image_to_rgb8,
    is_empty_image,
    pack_image,
    pack_mask,
    supported_encodings,
)

__all__ = [
    "ImageConversionError",
    "ImageFormat",
    "image_format",
    "supported_encodings",
    "is_empty_image",
    "image_to_numpy",
    "image_to_rgb8",
    "depth_to_meters",
    "numpy_to_image",
    "mask_to_image",
    "compressed_to_numpy",
    "compressed_to_rgb8",
    "numpy_to_compressed",
    "depth_to_compressed",
]


def _header_copy(header: Header | None) -> Header:
    out = Header()
    if header is not None:
        out.stamp.sec = header.stamp.sec
        out.stamp.nanosec = header.stamp.nanosec
        out.frame_id = header.frame_id
    return out


def _image(fields, header: Header | None) -> Image:
    msg = Image()
    msg.header = _header_copy(header)
    msg.height, msg.width, msg.encoding = fields.height, fields.width, fields.encoding
    msg.is_bigendian, msg.step, msg.data = fields.is_bigendian, fields.step, fields.data
    return msg


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """An Image of ``(H, W)`` or ``(H, W, C)`` pixels in ``encoding`` (:func:`lisa_ros.images.pack_image`)."""
    return _image(pack_image(array, encoding), header)


def mask_to_image(mask: np.ndarray, header: Header | None = None) -> Image:
    """A ``(H, W)`` mask (bool, or numbers with nonzero = object) as a mono8 0/255 Image."""
    return _image(pack_mask(mask), header)


def numpy_to_compressed(array: np.ndarray, encoding: str = "bgr8", fmt: str = "jpeg", header: Header | None = None,
                        jpeg_quality: int = 90) -> CompressedImage:
    """A jpeg or png CompressedImage of pixels given in ``encoding`` (:func:`lisa_ros.images.compress`)."""
    msg = CompressedImage()
    msg.header = _header_copy(header)
    msg.format, msg.data = compress(array, encoding, fmt, jpeg_quality)
    return msg


def depth_to_compressed(depth: np.ndarray, encoding: str, header: Header | None = None) -> CompressedImage:
    """A compressedDepth (PNG, 16UC1 millimetres) CompressedImage of a depth image
    (:func:`lisa_ros.images.compress_depth`)."""
    msg = CompressedImage()
    msg.header = _header_copy(header)
    msg.format, msg.data = compress_depth(depth, encoding)
    return msg
