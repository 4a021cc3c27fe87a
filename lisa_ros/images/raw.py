"""Raw images (``sensor_msgs/Image`` fields) <-> numpy: validation, decoding to the pixels as
stored or to RGB for the model, and packing numpy pixels into an encoding."""
from __future__ import annotations

import sys
from typing import Any

import cv2
import numpy as np

from lisa_ros.errors import ImageConversionError
from lisa_ros.images.encodings import PLANAR_SIZE, ImageFormat, RawImage, image_format

# ROS Bayer names -> OpenCV demosaicing codes (OpenCV names the pattern by its second row/column).
_BAYER_TO_RGB = {
    "bayer_rggb": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg": cv2.COLOR_BayerGB2RGB,
}


def is_empty_image(msg: RawImage) -> bool:
    """True for a default-constructed Image (no size, no data): "no image given" in requests."""
    return msg.height == 0 and msg.width == 0 and len(msg.data) == 0


def _validate(msg: RawImage, max_pixels: int | None) -> ImageFormat:
    fmt = image_format(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    if max_pixels is not None and height * width > max_pixels:
        raise ImageConversionError(
            f"image of {width}x{height} exceeds the limit of {max_pixels} pixels"
        )
    if msg.is_bigendian not in (0, 1):
        raise ImageConversionError(f"is_bigendian must be 0 or 1, got {msg.is_bigendian}")
    if fmt.layout in ("uyvy", "yuyv") and width % 2:
        raise ImageConversionError(
            f"{msg.encoding} packs pixel pairs: width must be even, got {width}"
        )
    if fmt.layout in ("nv12", "nv21") and (width % 2 or height % 2):
        raise ImageConversionError(
            f"{msg.encoding} subsamples chroma 2x2: width and height must be even, got {width}x{height}"
        )
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width x bytes per pixel = {width} x "
            f"{fmt.bytes_per_pixel} = {row_bytes} for {msg.encoding}"
        )
    numerator, denominator = PLANAR_SIZE.get(fmt.layout, (1, 1))
    expected = step * height * numerator // denominator
    if len(msg.data) != expected:
        size = f"{step} x {height}" + ("" if numerator == 1 else f" x {numerator}/{denominator} (Y plane and chroma)")
        raise ImageConversionError(f"data holds {len(msg.data)} bytes but step x height = {size} = {expected}")
    return fmt


def _decode_planar(msg: RawImage, fmt: ImageFormat) -> np.ndarray:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if fmt.layout in ("nv12", "nv21"):  # OpenCV's layout: the Y rows, then the chroma rows
        return np.ascontiguousarray(buffer.reshape(height * 3 // 2, step)[:, :width])
    luma = buffer[:height * step].reshape(height, step)[:, :width]
    chroma = buffer[height * step:].reshape(height, 2 * step)[:, :2 * width].reshape(height, width, 2)
    return np.ascontiguousarray(np.dstack([luma, chroma]))


def _decode_ours(msg: RawImage, fmt: ImageFormat) -> np.ndarray:
    if fmt.layout in PLANAR_SIZE:
        return _decode_planar(msg, fmt)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    # Drop row padding, then reinterpret the bytes with the message's byte order.
    rows = buffer.reshape(height, step)[:, : width * fmt.bytes_per_pixel]
    wire_dtype = fmt.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(wire_dtype)
    pixels = pixels.astype(fmt.dtype.newbyteorder("="), copy=True)
    if fmt.channels == 1:
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, fmt.channels)


_cv_bridge_instance: Any = None
_cv_bridge_checked = False


def _cv_bridge() -> Any:
    """A ROS 2 ``cv_bridge.CvBridge`` when one is importable, else None (cached)."""
    global _cv_bridge_instance, _cv_bridge_checked
    if not _cv_bridge_checked:
        _cv_bridge_checked = True
        try:
            from cv_bridge import CvBridge  # system ROS 2 only; PyPI's cv-bridge is ROS 1

            _cv_bridge_instance = CvBridge()
        except Exception:
            _cv_bridge_instance = None
    return _cv_bridge_instance


def _decode_with_cv_bridge(msg: RawImage, fmt: ImageFormat) -> np.ndarray | None:
    bridge = _cv_bridge()
    if bridge is None or fmt.layout in PLANAR_SIZE or int(msg.step) % fmt.bytes_per_pixel:
        # cv_bridge derives the row stride as step / bytes-per-pixel: padding that is not a whole
        # number of pixels would shift every row, so such messages use our decoder.
        return None
    try:
        array = np.array(bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough"), copy=True)
    except Exception:
        return None
    expected = (int(msg.height), int(msg.width)) + ((fmt.channels,) if fmt.channels > 1 else ())
    if array.shape != expected or array.dtype.kind != fmt.dtype.kind:
        return None  # cv_bridge disagrees with the declared layout: trust the checked decoder
    return array.astype(fmt.dtype.newbyteorder("="), copy=False)


def image_to_numpy(msg: RawImage, max_pixels: int | None = None) -> np.ndarray:
    """Validate ``msg`` and return its pixels as stored (see the package docstring of lisa_ros.images for shapes).

    Raises ImageConversionError for an unsupported encoding, zero size, more than ``max_pixels``
    pixels, a step shorter than a row, a data length other than step x height, an odd width for
    packed YUV, or an is_bigendian other than 0/1.
    """
    fmt = _validate(msg, max_pixels)
    decoded = _decode_with_cv_bridge(msg, fmt)
    return decoded if decoded is not None else _decode_ours(msg, fmt)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixels for the model; pass the colour channels only (alpha must not count).

    uint8 is returned as is. uint16 is shifted right by ``bits - 8``, where ``bits`` is the bit
    length of the frame's largest value, at least 8: 10- and 12-bit data (mono16, bayer16, rgb16
    from industrial and IR cameras) spans the full 8-bit range, data that uses the 16th bit is
    ``>> 8`` as before (as cv_bridge scales it), and values below 256 are kept. One shift for the
    whole frame keeps the colour balance. A 16-bit frame whose brightest value is below 32768 is
    brightened by the same rule: it cannot be told from 15-bit data.
    """
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        bits = max(8, int(pixels.max()).bit_length())
        return (pixels >> (bits - 8)).astype(np.uint8)
    raise ImageConversionError(
        f"{pixels.dtype} pixels are not a colour image (depth or float data cannot be segmented "
        "as colour)"
    )


def image_to_rgb8(msg: RawImage, max_pixels: int | None = None) -> np.ndarray:
    """Decode any colour, mono, YUV (4:2:2 packed, NV12/NV21/NV24 semi-planar) or Bayer image to
    ``(H, W, 3)`` uint8 RGB. Depth (16UC1, 32FC1) is refused: it is not a colour image. 16-bit
    encodings (mono16, rgb16, bgr16, rgba16, bgra16, 16UC3/4, bayer_*16) are scaled to 8 bits by
    the bits the frame's largest colour value needs (see ``to_uint8``)."""
    fmt = image_format(msg.encoding)
    if msg.encoding == "16UC1":
        raise ImageConversionError("16UC1 is a depth image (millimetres), not a colour image")
    pixels = image_to_numpy(msg, max_pixels)
    layout = fmt.layout
    if layout in ("nv12", "nv21"):
        return cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB_NV12 if layout == "nv12" else cv2.COLOR_YUV2RGB_NV21)
    if layout == "nv24":
        return cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB)
    if layout in ("uyvy", "yuyv"):
        code = cv2.COLOR_YUV2RGB_UYVY if layout == "uyvy" else cv2.COLOR_YUV2RGB_YUYV
        return cv2.cvtColor(pixels, code)
    if layout.startswith("bayer_"):
        if pixels.shape[0] < 2 or pixels.shape[1] < 2:
            raise ImageConversionError("a Bayer image needs at least 2x2 pixels to demosaic")
        return cv2.cvtColor(to_uint8(pixels), _BAYER_TO_RGB[layout])
    if layout == "raw":
        raise ImageConversionError(f"{msg.encoding} has 2 channels with no colour meaning")
    if fmt.dtype.kind == "f" or fmt.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ImageConversionError(
            f"{msg.encoding} is not a colour image (float or signed data, e.g. depth)"
        )
    if layout == "mono":
        return np.repeat(to_uint8(pixels)[:, :, None], 3, axis=2)
    if layout in ("rgb", "rgba"):
        return np.ascontiguousarray(to_uint8(pixels[:, :, :3]))
    if layout in ("bgr", "bgra"):
        return np.ascontiguousarray(to_uint8(pixels[:, :, 2::-1]))
    raise ImageConversionError(f"cannot convert {msg.encoding} to RGB")  # pragma: no cover


def check_array(array: np.ndarray, encoding: str) -> ImageFormat:
    """Raise ImageConversionError unless ``array`` has the shape and dtype ``encoding`` needs."""
    fmt = image_format(encoding)
    if array.ndim == 2:
        channels = 1
    elif array.ndim == 3:
        channels = array.shape[2]
    else:
        raise ImageConversionError(f"expected a 2-D or 3-D array, got shape {array.shape}")
    if channels != fmt.channels:
        raise ImageConversionError(
            f"{encoding} has {fmt.channels} channel(s), the array has {channels}"
        )
    if array.dtype.newbyteorder("=") != fmt.dtype:
        raise ImageConversionError(f"{encoding} needs {fmt.dtype} pixels, got {array.dtype}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"cannot build an image of zero size ({width}x{height})")
    if fmt.layout in ("uyvy", "yuyv") and width % 2:
        raise ImageConversionError(f"{encoding} needs an even width, got {width}")
    return fmt


def pack_image(array: np.ndarray, encoding: str) -> RawImage:
    """The fields of an Image holding ``(H, W)`` or ``(H, W, C)`` pixels in ``encoding`` (no padding).

    The array's dtype and channel count must match the encoding (ImageConversionError
    otherwise, and for the semi-planar encodings); multi-byte data is written in this machine's
    byte order and is_bigendian is set accordingly.
    """
    array = np.asarray(array)
    fmt = check_array(array, encoding)
    if fmt.layout in PLANAR_SIZE:
        raise ImageConversionError(f"only packed images can be built; {encoding} is semi-planar")
    height, width = array.shape[:2]
    native = np.ascontiguousarray(array, dtype=fmt.dtype.newbyteorder("="))
    return RawImage(int(height), int(width), encoding, int(sys.byteorder == "big" and fmt.dtype.itemsize > 1),
                    int(width * fmt.bytes_per_pixel), native.tobytes())


def pack_mask(mask: np.ndarray) -> RawImage:
    """A ``(H, W)`` mask (bool, or numbers with nonzero = object) as mono8 0/255 fields."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ImageConversionError(f"a mask must be 2-D, got shape {mask.shape}")
    return pack_image(np.where(mask != 0, 255, 0).astype(np.uint8), "mono8")
