"""sensor_msgs/Image and CompressedImage <-> numpy: the one place that knows image encodings.

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
from __future__ import annotations

import re
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import simplejpeg
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lisa_ros.errors import ImageConversionError

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
]


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
_PLANAR_SIZE = {"nv12": (3, 2), "nv21": (3, 2), "nv24": (3, 1)}
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

# ROS Bayer names -> OpenCV demosaicing codes (OpenCV names the pattern by its second row/column).
_BAYER_TO_RGB = {
    "bayer_rggb": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg": cv2.COLOR_BayerGB2RGB,
}


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


def is_empty_image(msg: Image) -> bool:
    """True for a default-constructed Image (no size, no data): "no image given" in requests."""
    return msg.height == 0 and msg.width == 0 and len(msg.data) == 0


def _validate(msg: Image, max_pixels: int | None) -> ImageFormat:
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
    numerator, denominator = _PLANAR_SIZE.get(fmt.layout, (1, 1))
    expected = step * height * numerator // denominator
    if len(msg.data) != expected:
        size = f"{step} x {height}" + ("" if numerator == 1 else f" x {numerator}/{denominator} (Y plane and chroma)")
        raise ImageConversionError(f"data holds {len(msg.data)} bytes but step x height = {size} = {expected}")
    return fmt


def _decode_planar(msg: Image, fmt: ImageFormat) -> np.ndarray:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if fmt.layout in ("nv12", "nv21"):  # OpenCV's layout: the Y rows, then the chroma rows
        return np.ascontiguousarray(buffer.reshape(height * 3 // 2, step)[:, :width])
    luma = buffer[:height * step].reshape(height, step)[:, :width]
    chroma = buffer[height * step:].reshape(height, 2 * step)[:, :2 * width].reshape(height, width, 2)
    return np.ascontiguousarray(np.dstack([luma, chroma]))


def _decode_ours(msg: Image, fmt: ImageFormat) -> np.ndarray:
    if fmt.layout in _PLANAR_SIZE:
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


def _decode_with_cv_bridge(msg: Image, fmt: ImageFormat) -> np.ndarray | None:
    bridge = _cv_bridge()
    if bridge is None or fmt.layout in _PLANAR_SIZE or int(msg.step) % fmt.bytes_per_pixel:
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


def image_to_numpy(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """Validate ``msg`` and return its pixels as stored (see the module docstring for shapes).

    Raises ImageConversionError for an unsupported encoding, zero size, more than ``max_pixels``
    pixels, a step shorter than a row, a data length other than step x height, an odd width for
    packed YUV, or an is_bigendian other than 0/1.
    """
    fmt = _validate(msg, max_pixels)
    decoded = _decode_with_cv_bridge(msg, fmt)
    return decoded if decoded is not None else _decode_ours(msg, fmt)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
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


def image_to_rgb8(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """Decode any colour, mono, YUV (4:2:2 packed, NV12/NV21/NV24 semi-planar) or Bayer image to
    ``(H, W, 3)`` uint8 RGB. Depth (16UC1, 32FC1) is refused: it is not a colour image. 16-bit
    encodings (mono16, rgb16, bgr16, rgba16, bgra16, 16UC3/4, bayer_*16) are scaled to 8 bits by
    the bits the frame's largest colour value needs (see ``_to_uint8``)."""
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
        return cv2.cvtColor(_to_uint8(pixels), _BAYER_TO_RGB[layout])
    if layout == "raw":
        raise ImageConversionError(f"{msg.encoding} has 2 channels with no colour meaning")
    if fmt.dtype.kind == "f" or fmt.dtype not in (_U8, _U16):
        raise ImageConversionError(
            f"{msg.encoding} is not a colour image (float or signed data, e.g. depth)"
        )
    if layout == "mono":
        return np.repeat(_to_uint8(pixels)[:, :, None], 3, axis=2)
    if layout in ("rgb", "rgba"):
        return np.ascontiguousarray(_to_uint8(pixels[:, :, :3]))
    if layout in ("bgr", "bgra"):
        return np.ascontiguousarray(_to_uint8(pixels[:, :, 2::-1]))
    raise ImageConversionError(f"cannot convert {msg.encoding} to RGB")  # pragma: no cover


def depth_to_meters(msg: Image | CompressedImage, max_pixels: int | None = None,
                    depth_scale: float = 0.001) -> np.ndarray:
    """Decode a depth image to ``(H, W)`` float32 metres; NaN where there is no measurement.

    ``16UC1``/``mono16`` are ``depth_scale`` metres per unit (REP 118: millimetres, 0.001; some
    drivers use other units) with 0 = no return; ``32FC1`` is metres with 0, negative, NaN and
    inf = no return. A CompressedImage must come from compressed_depth_image_transport (see
    ``_compressed_depth_to_meters``); the same units and rules apply to what it carries.
    Raises ImageConversionError for any other encoding or format, more than ``max_pixels``
    pixels, or malformed data.
    """
    if isinstance(msg, CompressedImage):
        depth = _compressed_depth_to_meters(msg, max_pixels, depth_scale)
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


def _header_copy(header: Header | None) -> Header:
    out = Header()
    if header is not None:
        out.stamp.sec = header.stamp.sec
        out.stamp.nanosec = header.stamp.nanosec
        out.frame_id = header.frame_id
    return out


def _check_array(array: np.ndarray, encoding: str) -> ImageFormat:
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


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Build an Image from ``(H, W)`` or ``(H, W, C)`` pixels in ``encoding`` (no padding).

    The array's dtype and channel count must match the encoding; multi-byte data is written in
    this machine's byte order and is_bigendian is set accordingly.
    """
    array = np.asarray(array)
    fmt = _check_array(array, encoding)
    if fmt.layout in _PLANAR_SIZE:
        raise ImageConversionError(f"numpy_to_image builds packed images; {encoding} is semi-planar")
    height, width = array.shape[:2]
    native = np.ascontiguousarray(array, dtype=fmt.dtype.newbyteorder("="))
    msg = Image()
    msg.header = _header_copy(header)
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big" and fmt.dtype.itemsize > 1)
    msg.step = int(width * fmt.bytes_per_pixel)
    msg.data = native.tobytes()
    return msg


def mask_to_image(mask: np.ndarray, header: Header | None = None) -> Image:
    """A ``(H, W)`` mask (bool, or numbers with nonzero = object) as a mono8 0/255 Image."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ImageConversionError(f"a mask must be 2-D, got shape {mask.shape}")
    return numpy_to_image(np.where(mask != 0, 255, 0).astype(np.uint8), "mono8", header)


def _compressed_kind(fmt: str) -> str:
    text = (fmt or "").lower()
    if "compresseddepth" in text:
        raise ImageConversionError(
            "compressedDepth is a depth image (depth_to_meters decodes it), not a jpeg/png colour image"
        )
    if "png" in text:
        return "png"
    if "jpeg" in text or "jpg" in text:
        return "jpeg"
    raise ImageConversionError(f"unsupported CompressedImage format {fmt!r} (expected jpeg or png)")


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (SOF0..SOF15 except DHT C4, JPG C8 and DAC CC) carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _compressed_size(data: bytes, kind: str) -> tuple[int, int]:
    """(height, width) read from the PNG/JPEG header, without decoding any pixels.

    Checking the size first keeps a small "decompression bomb" (a few hundred KB of PNG that
    decodes to gigabytes) from exhausting memory, and checking the magic bytes keeps other
    formats that OpenCV would happily parse (BMP, TIFF, WebP...) out.
    """
    if kind == "png":
        if data[:8] != _PNG_MAGIC or data[12:16] != b"IHDR" or len(data) < 24:
            raise ImageConversionError("data is not a PNG image (bad signature or header)")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return height, width
    if data[:2] != b"\xff\xd8":
        raise ImageConversionError("data is not a JPEG image (no start-of-image marker)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageConversionError("corrupt JPEG header (marker expected)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return height, width
        if length < 2:
            break
        pos += 2 + length
    raise ImageConversionError("corrupt JPEG: no frame header with the image size")


def _check_size(height: int, width: int, max_pixels: int | None) -> None:
    if height == 0 or width == 0:
        raise ImageConversionError(f"compressed image has zero size ({width}x{height})")
    if max_pixels is not None and height * width > max_pixels:
        raise ImageConversionError(
            f"image of {width}x{height} exceeds the limit of {max_pixels} pixels"
        )


# libjpeg's warning for bytes between the last scan and the end-of-image marker (0xD9).
_END_PADDING = re.compile(r"(\d+) extraneous bytes before marker 0xd9$")


def _is_end_padding(data: bytes, warning: str) -> bool:
    """Whether libjpeg's ``warning`` is about fill bytes before the end marker: the bytes it
    counts, just before the final FF D9, are all 0x00 or all 0xFF. (Damage inside the scan can
    end the decoding early with leftover scan data before the marker: that is not padding.)"""
    match = _END_PADDING.search(warning)
    if match is None or not data.endswith(b"\xff\xd9"):
        return False
    count = int(match.group(1))
    tail = data[-2 - count:-2]
    return len(tail) == count > 0 and tail.strip(tail[:1]) == b"" and tail[:1] in (b"\x00", b"\xff")


def _decode_jpeg(data: bytes) -> np.ndarray:
    """Decode with libjpeg-turbo (simplejpeg) in strict mode, to OpenCV's IMREAD_UNCHANGED layout
    and pixels: ``(H, W)`` for grey, ``(H, W, 3)`` BGR otherwise.

    Strict mode turns libjpeg's warnings ("Corrupt JPEG data: premature end of data segment",
    "N extraneous bytes before marker", "Premature end of JPEG file"), which OpenCV only prints
    while it returns a patched-up frame, into errors; except padding after a complete scan,
    before the end marker, which some UVC cameras add to every frame and which loses nothing.
    Damage that yields valid codes (e.g. zeroed scan bytes) raises no warning and cannot be seen.
    """
    strict = True
    while True:
        try:
            colourspace = simplejpeg.decode_jpeg_header(data, strict=strict)[2]
            if colourspace == "Gray":
                return simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=strict)[:, :, 0]
            if colourspace not in ("CMYK", "YCCK"):
                return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=strict)
            simplejpeg.decode_jpeg(data, colorspace="CMYK", strict=strict)  # the check only
            break
        except ValueError as exc:
            # Padding between a complete scan and the end marker (some UVC cameras pad every
            # MJPEG frame) loses nothing: decoded, not refused. Anything else is damage.
            if strict and _is_end_padding(data, str(exc)):
                strict = False
                continue
            raise ImageConversionError(f"jpeg data is corrupt or truncated ({exc})") from exc
    # CMYK/YCCK: print files, not camera frames. Checked above; OpenCV converts them to BGR, as before.
    return _decode_with_opencv(data, "jpeg")


def _png_damage(detail: str) -> ImageConversionError:
    return ImageConversionError(f"png data is corrupt or truncated ({detail})")


def _check_png_chunks(data: bytes) -> None:
    """Walk the chunks (length, 4-letter type, data, CRC-32 of type and data) up to IEND; raise
    ImageConversionError for a chunk cut short, a CRC mismatch or a missing IEND.

    Decoders disagree on these (Pillow decodes a PNG with a bad IDAT CRC or no IEND; OpenCV
    refuses them but cannot say why), so the check is ours, the same on every OpenCV version: a
    CRC over the bytes (about 1.5 ms for a 4 MB 1080p PNG, against 30 ms to decode it). A PNG
    without IEND is refused even when its pixel data happens to be complete: IEND is the only
    mark that the message was not cut, and every encoder writes it. Bytes after IEND are ignored,
    as libjpeg ignores bytes after EOI.
    """
    view = memoryview(data)
    pos, previous = len(_PNG_MAGIC), None
    while pos < len(data):
        if pos + 12 > len(data):
            raise _png_damage(f"the data ends inside a chunk header at byte {pos} of {len(data)}")
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if not re.fullmatch(rb"[A-Za-z]{4}", kind):
            raise _png_damage(f"invalid chunk type {kind!r} at byte {pos}")
        name, end = kind.decode("ascii"), pos + 12 + length
        if end > len(data):
            raise _png_damage(f"the data ends inside the {name} chunk at byte {pos}: {len(data)} of {end} bytes")
        if zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            raise _png_damage(f"CRC mismatch in the {name} chunk at byte {pos}")
        if name == "IEND":
            return
        pos, previous = end, name
    raise _png_damage(f"no IEND chunk: the data ends after the {previous} chunk")


def _decode_with_opencv(data: bytes, kind: str) -> np.ndarray:
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageConversionError(f"cannot decode {kind} data: {exc}") from exc
    if decoded is None or decoded.size == 0:
        raise ImageConversionError(f"{kind} data is corrupt ({len(data)} bytes; OpenCV cannot decode the pixels)")
    return decoded


def _decode_compressed(data: bytes, kind: str, max_pixels: int | None) -> np.ndarray:
    """Check (magic, size from the header, damage) and decode ``kind`` ("jpeg"/"png") data once."""
    if not data:
        raise ImageConversionError("compressed image has no data")
    _check_size(*_compressed_size(data, kind), max_pixels)
    if kind == "jpeg":
        return _decode_jpeg(data)
    _check_png_chunks(data)
    return _decode_with_opencv(data, kind)


def compressed_to_numpy(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """Decode a jpeg/png CompressedImage as OpenCV's IMREAD_UNCHANGED does: ``(H, W)`` grey or
    ``(H, W, 3|4)`` BGR(A), uint8 or (png) uint16.

    Raises ImageConversionError for another format, more than ``max_pixels`` pixels (read from
    the header, before decoding), or damaged data: "jpeg/png data is corrupt or truncated (...)"
    names what the decoder or the PNG chunk check found.
    """
    return _decode_compressed(bytes(msg.data), _compressed_kind(msg.format), max_pixels)


# compressed_depth_image_transport (ros-perception/image_transport_plugins, codec.cpp): format
# "<encoding>; compressedDepth <png|rvl>" (older publishers: "<encoding>; compressedDepth", png),
# data = ConfigHeader {compressionFormat format; float depthParam[2]} (12 bytes, little-endian),
# then the image.
_COMPRESSED_DEPTH_FORMAT = re.compile(r"\s*([^;\s]+)\s*;\s*compressedDepth(?:\s+(\S+))?\s*")
_DEPTH_CONFIG = struct.Struct("<iff")
_INV_DEPTH = 0  # the only compressionFormat value publishers write, for 16UC1 and 32FC1 alike
_RVL_SIZE = struct.Struct("<II")  # cols, rows
_NIBBLE_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)  # first nibble of a word in the high bits
_RVL_MAX_NIBBLES = 11  # 33 bits: any run length or zigzag difference; longer is corrupt


def _rvl_damage(detail: str) -> ImageConversionError:
    return ImageConversionError(f"compressedDepth rvl data is corrupt or truncated ({detail})")


def _decode_rvl(data: bytes, max_pixels: int | None) -> np.ndarray:
    """``(H, W)`` uint16 from compressed_depth_image_transport's RVL payload: uint32 cols, uint32
    rows, then RVL (A. Wilson, "Fast Lossless Depth Image Compression", 2017) in little-endian
    32-bit words.

    A word holds 8 nibbles, the first in the high bits; a nibble carries 3 bits of a number
    (least significant group first) and 0x8 when more groups follow. The numbers repeat: a count
    of zero pixels, a count of non-zero pixels, then each of those as the zigzag-coded difference
    from the previous non-zero pixel (mod 2^16). The last word is padded with zero nibbles. RVL
    has no checksum, so the structure is checked: a stream that ends before cols x rows pixels,
    describes more, has more than the padding after them, or codes a zero in a non-zero run is
    refused.
    """
    if len(data) < _RVL_SIZE.size:
        raise ImageConversionError(f"compressedDepth rvl data holds {len(data)} bytes, less than its 8-byte size")
    width, height = _RVL_SIZE.unpack_from(data)
    _check_size(height, width, max_pixels)
    body = data[_RVL_SIZE.size:]
    if len(body) % 4:
        raise _rvl_damage(f"{len(body)} bytes after the size are not whole 32-bit words")
    nibbles = ((np.frombuffer(body, dtype="<u4")[:, None] >> _NIBBLE_SHIFTS) & 0xF).astype(np.int64).ravel()
    last = np.flatnonzero(nibbles < 8)  # the last nibble of each number
    if not last.size:
        raise _rvl_damage("no complete number")
    first = np.concatenate(([0], last[:-1] + 1))
    lengths = last - first + 1
    if lengths.max() > _RVL_MAX_NIBBLES:
        raise _rvl_damage(f"a number of more than {_RVL_MAX_NIBBLES} nibbles")
    place = np.arange(last[-1] + 1) - np.repeat(first, lengths)
    numbers = np.add.reduceat((nibbles[:last[-1] + 1] & 7) << (3 * place), first)
    total, listed = width * height, numbers.tolist()
    runs = []  # (first pixel, index of its first difference, pixels) of each non-zero run
    pixel = index = 0
    while pixel < total:
        if index + 2 > len(listed):
            raise _rvl_damage(f"the data ends at pixel {pixel} of {width}x{height}")
        pixel += listed[index]
        run, index = listed[index + 1], index + 2
        if pixel + run > total:
            raise _rvl_damage(f"the runs describe more than {width}x{height} pixels")
        if index + run > len(listed):
            raise _rvl_damage(f"the data ends at pixel {pixel} of {width}x{height}")
        runs.append((pixel, index, run))
        pixel, index = pixel + run, index + run
    padding = len(nibbles) - int(last[index - 1]) - 1
    if padding >= 8 or nibbles[len(nibbles) - padding:].any():
        raise _rvl_damage(f"{padding} nibbles after the last pixel, more than the padding of one word")
    starts, firsts, sizes = np.array(runs, dtype=np.int64).reshape(-1, 3).T
    offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    zigzag = numbers[np.repeat(firsts, sizes) + offsets]
    values = np.cumsum((zigzag >> 1) ^ -(zigzag & 1)) & 0xFFFF
    if not values.all():
        raise _rvl_damage("a zero inside a run of non-zero pixels")
    depth = np.zeros(total, dtype=np.uint16)
    depth[np.repeat(starts, sizes) + offsets] = values
    return depth.reshape(height, width)


def _compressed_depth_to_meters(msg: CompressedImage, max_pixels: int | None, depth_scale: float) -> np.ndarray:
    """``(H, W)`` float32 metres (no-return not yet NaN) from a compressed_depth_image_transport
    message: ``format`` "<encoding>; compressedDepth [png|rvl]", ``data`` a 12-byte little-endian
    ConfigHeader (int32 ``format``, which must be INV_DEPTH = 0; float32 ``depthParam[0]`` = A,
    ``depthParam[1]`` = B), then a 16-bit single-channel image as PNG or RVL (``_decode_rvl``).

    * ``16UC1`` (or ``mono16``): the image holds the depth values themselves, ``depth_scale``
      metres per unit, 0 = no return (the publisher also zeroes depth beyond its depth_max);
      A and B are unused.
    * ``32FC1``: the image holds quantized inverse depth, value = uint16(A / depth + B) with
      A = z0 (z0 + 1), B = 1 - A / depth_max (the publisher's depth_quantization z0 and
      depth_max), 0 for no return or depth >= depth_max; decoded as depth = A / (value - B)
      metres, the subscriber's formula, in float32. The truncation makes the decoded depth up to
      one inverse-depth step deeper than the true one: d^2 / (A - d), 9.9 mm at 10 m with the
      defaults z0 = 100, depth_max = 10.
    """
    match = _COMPRESSED_DEPTH_FORMAT.fullmatch(msg.format or "")
    if match is None or (match.group(2) or "png") not in ("png", "rvl"):
        raise ImageConversionError(
            f"unsupported depth CompressedImage format {msg.format!r} (expected compressed_depth_image_transport's "
            "'<16UC1|32FC1>; compressedDepth [png|rvl]')"
        )
    encoding, codec = match.group(1), match.group(2) or "png"
    if encoding not in ("16UC1", "mono16", "32FC1"):
        raise ImageConversionError(
            f"unsupported depth encoding {encoding!r} in {msg.format!r} (expected 16UC1 in mm or 32FC1 in m)"
        )
    data = bytes(msg.data)
    if len(data) <= _DEPTH_CONFIG.size:
        raise ImageConversionError(
            f"compressedDepth data holds {len(data)} bytes: it needs the 12-byte configuration header, then the image"
        )
    header_format, quant_a, quant_b = _DEPTH_CONFIG.unpack_from(data)
    if header_format != _INV_DEPTH:
        raise ImageConversionError(
            f"compressedDepth configuration header has format {header_format}, expected INV_DEPTH (0): "
            "is the 12-byte header missing?"
        )
    payload = data[_DEPTH_CONFIG.size:]
    if codec == "rvl":
        coded = _decode_rvl(payload, max_pixels)
    else:
        coded = _decode_compressed(payload, "png", max_pixels)
        if coded.dtype != np.uint16 or coded.ndim != 2:
            channels = 1 if coded.ndim == 2 else coded.shape[2]
            raise ImageConversionError(
                f"compressedDepth png must be 16-bit single-channel, got {coded.dtype} with {channels} channel(s)"
            )
    if encoding != "32FC1":
        return coded.astype(np.float32) * np.float32(depth_scale)
    with np.errstate(divide="ignore"):
        depth = np.float32(quant_a) / (coded.astype(np.float32) - np.float32(quant_b))
    depth[coded == 0] = np.nan
    return depth


# Source encodings that are depth, not colour, in a compressed_image_transport format string
# ("16UC1; png compressed"): refused as colour, as the raw depth encodings are.
_DEPTH_ENCODINGS = ("16UC1", "32FC1")


def compressed_to_rgb8(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """Decode a jpeg/png CompressedImage to ``(H, W, 3)`` uint8 RGB (16-bit png scaled as
    ``image_to_rgb8`` scales 16-bit data); errors as ``compressed_to_numpy``.

    A format that names a depth encoding ("16UC1; png compressed", compressed_image_transport's
    way of carrying depth) or compressedDepth is refused like raw depth."""
    source = (msg.format or "").split(";", 1)[0].strip()
    if source in _DEPTH_ENCODINGS:
        raise ImageConversionError(f"{source} is a depth image ({msg.format!r}), not a colour image")
    decoded = compressed_to_numpy(msg, max_pixels)
    if decoded.ndim == 2:
        return np.repeat(_to_uint8(decoded)[:, :, None], 3, axis=2)
    return np.ascontiguousarray(_to_uint8(decoded[:, :, 2::-1]))  # BGR(A) -> RGB


# Encodings OpenCV can write to jpeg/png (colour, alpha, grey; 8 or 16 bit).
_COMPRESSIBLE = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb16", "bgr16", "rgba16", "bgra16",
                 "mono16", "8UC1", "8UC3", "8UC4", "16UC1", "16UC3", "16UC4"}


def numpy_to_compressed(
    array: np.ndarray,
    encoding: str = "bgr8",
    fmt: str = "jpeg",
    header: Header | None = None,
    jpeg_quality: int = 90,
) -> CompressedImage:
    """Compress pixels given in ``encoding`` (bgr8, rgb8, mono8, mono16...) to jpeg or png.

    The format string follows compressed_image_transport: ``"<encoding>; <fmt> compressed bgr8"``
    (or ``mono8``/``mono16`` for one channel), so image_transport subscribers can read it.
    """
    kind = _compressed_kind(fmt)
    if encoding not in _COMPRESSIBLE:
        raise ImageConversionError(
            f"cannot compress {encoding!r} (use one of {', '.join(sorted(_COMPRESSIBLE))})"
        )
    if not 0 <= int(jpeg_quality) <= 100:
        raise ImageConversionError(f"jpeg_quality must be 0..100, got {jpeg_quality}")
    array = np.asarray(array)
    _check_array(array, encoding)
    if encoding in ("rgb8", "rgb16"):
        array = np.ascontiguousarray(array[:, :, ::-1])
    elif encoding in ("rgba8", "rgba16"):
        array = np.ascontiguousarray(array[:, :, [2, 1, 0, 3]])
    if kind == "jpeg" and array.dtype != np.uint8:
        raise ImageConversionError("jpeg holds 8-bit images only; use png for 16-bit data")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if kind == "jpeg" else []
    try:
        ok, encoded = cv2.imencode(".jpg" if kind == "jpeg" else ".png", array, params)
    except cv2.error as exc:
        raise ImageConversionError(f"OpenCV could not encode the image as {kind}: {exc}") from exc
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {array.shape} image as {kind}")
    channels = 1 if array.ndim == 2 else array.shape[2]
    stored = {1: "mono", 3: "bgr", 4: "bgra"}[channels] + ("16" if array.dtype == np.uint16 else "8")
    msg = CompressedImage()
    msg.header = _header_copy(header)
    msg.format = f"{encoding}; {kind} compressed {stored}"
    msg.data = encoded.tobytes()
    return msg
