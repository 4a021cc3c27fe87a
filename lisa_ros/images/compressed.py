"""Compressed images (``sensor_msgs/CompressedImage`` fields) <-> numpy: jpeg and png as
image_transport's compressed plugin writes them, and compressed_depth_image_transport's depth
(png or RVL), each checked before it is decoded."""
from __future__ import annotations

import re
import struct
import zlib

import cv2
import numpy as np
import simplejpeg

from lisa_ros.errors import ImageConversionError
from lisa_ros.images.encodings import CompressedFields
from lisa_ros.images.raw import check_array, to_uint8


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


def compressed_to_numpy(msg: CompressedFields, max_pixels: int | None = None) -> np.ndarray:
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


def compressed_depth_to_meters(msg: CompressedFields, max_pixels: int | None, depth_scale: float) -> np.ndarray:
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


def compressed_to_rgb8(msg: CompressedFields, max_pixels: int | None = None) -> np.ndarray:
    """Decode a jpeg/png CompressedImage to ``(H, W, 3)`` uint8 RGB (16-bit png scaled as
    ``image_to_rgb8`` scales 16-bit data); errors as ``compressed_to_numpy``.

    A format that names a depth encoding ("16UC1; png compressed", compressed_image_transport's
    way of carrying depth) or compressedDepth is refused like raw depth."""
    source = (msg.format or "").split(";", 1)[0].strip()
    if source in _DEPTH_ENCODINGS:
        raise ImageConversionError(f"{source} is a depth image ({msg.format!r}), not a colour image")
    decoded = compressed_to_numpy(msg, max_pixels)
    if decoded.ndim == 2:
        return np.repeat(to_uint8(decoded)[:, :, None], 3, axis=2)
    return np.ascontiguousarray(to_uint8(decoded[:, :, 2::-1]))  # BGR(A) -> RGB


# Encodings OpenCV can write to jpeg/png (colour, alpha, grey; 8 or 16 bit).
_COMPRESSIBLE = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb16", "bgr16", "rgba16", "bgra16",
                 "mono16", "8UC1", "8UC3", "8UC4", "16UC1", "16UC3", "16UC4"}


def compress(array: np.ndarray, encoding: str = "bgr8", fmt: str = "jpeg", jpeg_quality: int = 90) -> tuple[str, bytes]:
    """(format, data) of a CompressedImage holding pixels given in ``encoding`` (bgr8, rgb8,
    mono8, mono16...) as jpeg or png.

    The format string follows compressed_image_transport: ``"<encoding>; <fmt> compressed bgr8"``
    (or ``mono8``/``mono16`` for one channel), so image_transport subscribers can read it.
    ImageConversionError for an encoding OpenCV cannot write, 16-bit jpeg, or a quality outside
    0..100.
    """
    kind = _compressed_kind(fmt)
    if encoding not in _COMPRESSIBLE:
        raise ImageConversionError(
            f"cannot compress {encoding!r} (use one of {', '.join(sorted(_COMPRESSIBLE))})"
        )
    if not 0 <= int(jpeg_quality) <= 100:
        raise ImageConversionError(f"jpeg_quality must be 0..100, got {jpeg_quality}")
    array = np.asarray(array)
    check_array(array, encoding)
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
    return f"{encoding}; {kind} compressed {stored}", encoded.tobytes()


def compress_depth(depth: np.ndarray, encoding: str) -> tuple[str, bytes]:
    """(format, data) of a compressed_depth_image_transport CompressedImage (PNG), the layout
    :func:`compressed_depth_to_meters` reads: ``"16UC1; compressedDepth png"``, the 12-byte
    ConfigHeader (INV_DEPTH, A = B = 0: unused for 16UC1), then a 16-bit PNG.

    ``depth``: ``(H, W)`` uint16 in ``16UC1`` (kept as they are: millimetres, as 16UC1 depth is
    read), or float metres in ``32FC1`` (written as 16UC1 millimetres, rounded; no return, NaN,
    <= 0 or beyond 65.535 m become 0, as drivers write). ImageConversionError for another
    encoding."""
    if encoding == "16UC1":
        units = np.asarray(depth, dtype=np.uint16)
    elif encoding == "32FC1":
        metres = np.asarray(depth, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            scaled = np.where(np.isfinite(metres) & (metres > 0), np.round(metres * 1000.0), 0)
        units = np.where(scaled <= 65535, scaled, 0).astype(np.uint16)
    else:
        raise ImageConversionError(f"cannot compress depth in {encoding!r} (16UC1 in units or 32FC1 in metres)")
    if units.ndim != 2:
        raise ImageConversionError(f"depth must be (H, W), got {units.shape}")
    ok, encoded = cv2.imencode(".png", units)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {units.shape} depth image as png")
    return "16UC1; compressedDepth png", _DEPTH_CONFIG.pack(_INV_DEPTH, 0.0, 0.0) + encoded.tobytes()
