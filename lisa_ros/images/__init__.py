"""Camera images <-> numpy, ROS-free: the one place that knows sensor_msgs image encodings.

The functions read the fields of ``sensor_msgs/Image`` (:class:`~.encodings.RawImage`) or
``sensor_msgs/CompressedImage`` (:class:`~.encodings.CompressedFields`) from whatever holds them:
an rclpy message (:mod:`lisa_ros.ros.conversions` builds those), a message read from a rosbag2
file by ``rosbags`` (``data`` a uint8 array), or any object with the same fields. Packing goes
the other way, to fields any message class can take (:func:`pack_image`, :func:`compress`).

Every decoding function validates the message first (encoding, size, step, data length,
endianness) and raises :class:`ImageConversionError`, and only that, for anything inconsistent:
callers turn it into a ``success=false`` answer. No function here returns a silently wrong image.

Conventions
-----------
* ``image_to_numpy`` returns the pixels as stored: ``(H, W)`` for one channel, ``(H, W, C)``
  otherwise, in native byte order, as a fresh array that does not alias the message buffer.
  Packed YUV 4:2:2 comes back as ``(H, W, 2)`` uint8 (the raw byte pairs); semi-planar NV12/NV21
  (4:2:0) as OpenCV stores them, ``(H * 3 / 2, W)`` uint8 (the Y plane, then the interleaved
  chroma rows), and NV24 (4:4:4) as ``(H, W, 3)`` Y, U, V.
* ``image_to_rgb8`` returns ``(H, W, 3)`` uint8 RGB for any colour, mono, YUV or Bayer encoding:
  what the model consumes. 16-bit data is scaled by the bits its largest value needs (at least
  8), so 10- and 12-bit cameras publishing mono16/bayer16 span the full 8-bit range (``_to_uint8``).
* ``depth_to_meters`` returns ``(H, W)`` float32 metres with NaN for "no measurement", from a raw
  depth Image or a compressed_depth_image_transport CompressedImage (png or rvl).
* Compressed jpeg/png frames are checked, not only decoded: a JPEG for which libjpeg reports
  corrupt or missing data (what a USB camera that lost packets sends, and OpenCV decodes with a
  grey lower half) and a PNG with a chunk cut short, a bad CRC or no IEND are refused.
* :class:`ImageConversionError` is :class:`lisa_ros.errors.ImageConversionError` (a ``LisaError``
  and a ``ValueError``), re-exported here.
* When a ROS 2 ``cv_bridge`` is importable (a system ROS 2 install) it decodes raw images after
  our validation; our own decoder is used otherwise, or when cv_bridge fails on an encoding
  (e.g. ``8UC1`` vs ``mono8``, vision_opencv#175).
"""
from lisa_ros.errors import ImageConversionError
from lisa_ros.images.compressed import compress, compress_depth, compressed_to_numpy, compressed_to_rgb8
from lisa_ros.images.depth import depth_to_meters, is_compressed
from lisa_ros.images.encodings import (
    CompressedFields,
    ImageFormat,
    RawImage,
    image_format,
    supported_encodings,
)
from lisa_ros.images.raw import image_to_numpy, image_to_rgb8, is_empty_image, pack_image, pack_mask

__all__ = [
    "CompressedFields",
    "ImageConversionError",
    "ImageFormat",
    "RawImage",
    "compress",
    "compress_depth",
    "compressed_to_numpy",
    "compressed_to_rgb8",
    "depth_to_meters",
    "image_format",
    "image_to_numpy",
    "image_to_rgb8",
    "is_compressed",
    "is_empty_image",
    "pack_image",
    "pack_mask",
    "supported_encodings",
]
