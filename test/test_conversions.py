"""Image conversions: round trips for every encoding, padding, endianness, and malformed messages.

Messages are built here byte by byte (independently of ``numpy_to_image``) so that a decoder
bug cannot be cancelled out by the matching encoder bug.
"""
from __future__ import annotations

import struct
import sys

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lisa_ros.images import compressed, raw
from lisa_ros.ros import conversions
from lisa_ros.ros.conversions import (
    ImageConversionError,
    compressed_to_numpy,
    compressed_to_rgb8,
    depth_to_meters,
    image_format,
    image_to_numpy,
    image_to_rgb8,
    is_empty_image,
    mask_to_image,
    numpy_to_compressed,
    numpy_to_image,
)

# The encodings the design card names, plus the rest we accept.
LISTED = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1", "8UC1", "8UC3",
          "yuv422", "yuyv"]
SEMI_PLANAR = ("nv12", "nv21", "nv24")  # their own tests below: one plane per message is not a pixel array
ALL_ENCODINGS = [e for e in conversions.supported_encodings() if e not in SEMI_PLANAR]

settings.register_profile("lisa", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lisa")


def raw_message(pixels: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False,
                header: Header | None = None) -> Image:
    """An Image with ``padding`` junk bytes after every row, data in the requested byte order."""
    fmt = image_format(encoding)
    height, width = pixels.shape[:2]
    wire = pixels.astype(fmt.dtype.newbyteorder(">" if bigendian else "<"))
    row_bytes = width * fmt.bytes_per_pixel
    rows = wire.reshape(height, -1).view(np.uint8).reshape(height, row_bytes)
    junk = np.full((height, padding), 0xAB, dtype=np.uint8)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = int(bigendian)
    msg.step = row_bytes + padding
    msg.data = np.concatenate([rows, junk], axis=1).tobytes()
    return msg


def random_pixels(encoding: str, height: int, width: int, seed: int) -> np.ndarray:
    fmt = image_format(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if fmt.channels == 1 else (height, width, fmt.channels)
    if fmt.dtype.kind == "f":
        return rng.standard_normal(shape).astype(fmt.dtype) * 100
    info = np.iinfo(fmt.dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=fmt.dtype)


@st.composite
def image_cases(draw, encodings=ALL_ENCODINGS):
    encoding = draw(st.sampled_from(encodings))
    fmt = image_format(encoding)
    height = draw(st.integers(1, 12))
    width = draw(st.integers(1, 12))
    if fmt.layout in ("uyvy", "yuyv"):
        width += width % 2
    padding = draw(st.integers(0, 9))
    bigendian = draw(st.booleans()) if fmt.dtype.itemsize > 1 else False
    seed = draw(st.integers(0, 2**32 - 1))
    return encoding, random_pixels(encoding, height, width, seed), padding, bigendian


# ---------------------------------------------------------------------------------------------
# Round trips


@given(image_cases())
def test_decode_recovers_pixels_for_every_encoding_padding_and_byte_order(case):
    encoding, pixels, padding, bigendian = case
    decoded = image_to_numpy(raw_message(pixels, encoding, padding, bigendian))
    assert decoded.dtype == pixels.dtype.newbyteorder("=")
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, pixels)


@given(image_cases())
def test_numpy_to_image_round_trip(case):
    encoding, pixels, _, _ = case
    msg = numpy_to_image(pixels, encoding)
    assert msg.step == msg.width * image_format(encoding).bytes_per_pixel
    assert msg.is_bigendian == int(sys.byteorder == "big" and pixels.dtype.itemsize > 1)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


@pytest.mark.parametrize("encoding", LISTED)
def test_every_listed_encoding_round_trips_a_vga_frame_with_row_padding(encoding):
    pixels = random_pixels(encoding, 480, 640, seed=7)
    msg = raw_message(pixels, encoding, padding=16)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(pixels, encoding)), pixels)


def test_decoded_array_does_not_alias_the_message_buffer():
    pixels = random_pixels("rgb8", 4, 4, seed=1)
    msg = raw_message(pixels, "rgb8")
    decoded = image_to_numpy(msg)
    decoded[:] = 0
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


def test_big_endian_16_bit_depth_is_byte_swapped():
    msg = Image(height=1, width=2, encoding="16UC1", is_bigendian=1, step=4)
    msg.data = bytes([0x01, 0x02, 0x03, 0x04])  # 0x0102, 0x0304 big-endian
    np.testing.assert_array_equal(image_to_numpy(msg), np.array([[0x0102, 0x0304]], np.uint16))
    msg.is_bigendian = 0
    np.testing.assert_array_equal(image_to_numpy(msg), np.array([[0x0201, 0x0403]], np.uint16))


# ---------------------------------------------------------------------------------------------
# Colour: what the model receives


def eight_bit(colour: np.ndarray) -> np.ndarray:
    """The documented 16-bit rule, written out: shift right by (bits - 8), where bits (at least 8)
    is the bit length of the largest value; uint8 passes through."""
    if colour.dtype == np.uint8:
        return colour
    bits = max(8, int(colour.max()).bit_length())
    return (colour >> (bits - 8)).astype(np.uint8)


@given(image_cases(["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4", "rgb16", "bgr16", "rgba16",
                    "bgra16", "16UC3", "16UC4"]))
def test_colour_encodings_decode_to_rgb(case):
    encoding, pixels, padding, bigendian = case
    rgb = image_to_rgb8(raw_message(pixels, encoding, padding, bigendian))
    layout = image_format(encoding).layout
    colour = pixels[:, :, :3] if layout.startswith("rgb") else pixels[:, :, 2::-1]
    expected = eight_bit(colour)  # alpha does not count towards the bit depth
    assert rgb.shape == pixels.shape[:2] + (3,) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected)


@given(image_cases(["mono8", "8UC1", "mono16"]))
def test_mono_encodings_decode_to_grey_rgb(case):
    encoding, pixels, padding, bigendian = case
    rgb = image_to_rgb8(raw_message(pixels, encoding, padding, bigendian))
    grey = eight_bit(pixels)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


def _bt601_rgb(y, u, v):
    """ITU-R BT.601 limited-range YUV -> RGB, written out independently of OpenCV."""
    c, d, e = y - 16.0, u - 128.0, v - 128.0
    r = 1.164 * c + 1.596 * e
    g = 1.164 * c - 0.392 * d - 0.813 * e
    b = 1.164 * c + 2.017 * d
    return np.clip(np.round([r, g, b]), 0, 255)


@pytest.mark.parametrize("encoding,order", [("yuyv", "YUYV"), ("yuv422_yuy2", "YUYV"),
                                            ("yuv422", "UYVY"), ("uyvy", "UYVY")])
@given(y=st.integers(16, 235), u=st.integers(16, 240), v=st.integers(16, 240))
def test_packed_yuv422_decodes_to_bt601_colour(encoding, order, y, u, v):
    pair = {"YUYV": [y, u, y, v], "UYVY": [u, y, v, y]}[order]
    raw = np.tile(np.array(pair, np.uint8), (4, 3)).reshape(4, 6, 2)  # 4 rows x 6 pixels
    rgb = image_to_rgb8(raw_message(raw, encoding, padding=3))
    assert rgb.shape == (4, 6, 3)
    # OpenCV's fixed-point conversion may differ from the float formula by rounding only.
    assert np.abs(rgb.astype(int) - _bt601_rgb(y, u, v)).max() <= 2


def test_yuyv_and_uyvy_differ_only_in_byte_order():
    rng = np.random.default_rng(3)
    y = rng.integers(16, 235, (6, 8)).astype(np.uint8)
    uv = rng.integers(16, 240, (6, 8)).astype(np.uint8)
    yuyv = np.stack([y, uv], axis=2)
    uyvy = np.stack([uv, y], axis=2)
    np.testing.assert_array_equal(image_to_rgb8(raw_message(yuyv, "yuyv")),
                                  image_to_rgb8(raw_message(uyvy, "yuv422")))


def uniform_mosaic(pattern: str, colour: dict[str, int], dtype) -> np.ndarray:
    """An 8x10 Bayer mosaic (``pattern`` such as "rggb") of one colour."""
    mosaic = np.zeros((8, 10), dtype)
    for index, name in enumerate(pattern):
        mosaic[index // 2::2, index % 2::2] = colour[name]
    return mosaic


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_mosaic_of_a_uniform_colour_demosaics_to_that_colour(pattern):
    mosaic = uniform_mosaic(pattern, {"r": 200, "g": 90, "b": 20}, np.uint8)
    rgb = image_to_rgb8(raw_message(mosaic, f"bayer_{pattern}8"))
    np.testing.assert_array_equal(rgb[2:-2, 2:-2], np.broadcast_to([200, 90, 20], (4, 6, 3)))


@pytest.mark.parametrize("bits", [10, 12])
def test_10_and_12_bit_mono16_spans_the_full_8_bit_range(bits):
    """Industrial and IR cameras put 10/12-bit values in mono16: scaled as 16-bit data (/257 or
    >> 8) they come out near-black (at most 3 or 15)."""
    ramp = np.linspace(0, 2**bits - 1, 7 * 9).round().astype(np.uint16).reshape(7, 9)
    rgb = image_to_rgb8(raw_message(ramp, "mono16", padding=2, bigendian=True))
    assert rgb.dtype == np.uint8 and rgb.shape == (7, 9, 3)
    assert (rgb.min(), rgb.max()) == (0, 255)
    np.testing.assert_array_equal(rgb[:, :, 1], (ramp >> (bits - 8)).astype(np.uint8))


def test_full_16_bit_data_is_scaled_as_before():
    pixels = np.array([[0, 255, 256, 4095], [4096, 32768, 40000, 65535]], np.uint16)
    for encoding, frame in (("mono16", pixels), ("rgb16", np.dstack([pixels] * 3))):
        rgb = image_to_rgb8(raw_message(frame, encoding))
        np.testing.assert_array_equal(rgb[:, :, 0], (pixels >> 8).astype(np.uint8))


def test_dark_or_8_bit_values_in_16_bit_encodings_are_not_scaled():
    pixels = np.array([[0, 17, 200, 255]], np.uint16)  # needs 8 bits: the minimum, kept as is
    np.testing.assert_array_equal(image_to_rgb8(raw_message(pixels, "mono16"))[:, :, 0], pixels)


def test_12_bit_colour_ignores_the_alpha_channel_for_the_bit_depth():
    rng = np.random.default_rng(11)
    colour = rng.integers(0, 4096, (5, 6, 3), dtype=np.uint16)
    colour[0, 0, 0] = 4095
    rgba = np.dstack([colour, np.full((5, 6), 65535, np.uint16)])  # opaque, 16-bit alpha
    np.testing.assert_array_equal(image_to_rgb8(raw_message(rgba, "rgba16")), (colour >> 4).astype(np.uint8))
    np.testing.assert_array_equal(image_to_rgb8(raw_message(colour[:, :, ::-1].copy(), "bgr16")),
                                  (colour >> 4).astype(np.uint8))


@pytest.mark.parametrize("pattern", ["rggb", "grbg"])
def test_12_bit_bayer16_demosaics_to_the_full_8_bit_range(pattern):
    mosaic = uniform_mosaic(pattern, {"r": 4095, "g": 2048, "b": 16}, np.uint16)
    rgb = image_to_rgb8(raw_message(mosaic, f"bayer_{pattern}16"))
    np.testing.assert_array_equal(rgb[2:-2, 2:-2], np.broadcast_to([255, 128, 1], (4, 6, 3)))


def test_12_bit_mono16_png_spans_the_full_8_bit_range():
    ramp = np.arange(0, 4096, 64, dtype=np.uint16).reshape(8, 8)
    ramp[-1, -1] = 4095
    rgb = compressed_to_rgb8(numpy_to_compressed(ramp, "mono16", "png"))
    np.testing.assert_array_equal(rgb[:, :, 2], (ramp >> 4).astype(np.uint8))
    assert rgb.max() == 255


@pytest.mark.parametrize("encoding", ["32FC1", "16SC1", "64FC1", "8UC2", "16UC1"])
def test_non_colour_encodings_are_refused_as_colour(encoding):
    msg = raw_message(random_pixels(encoding, 3, 4, seed=0), encoding)
    with pytest.raises(ImageConversionError):
        image_to_rgb8(msg)


# ---------------------------------------------------------------------------------------------
# Depth


def test_16uc1_depth_is_millimetres_with_zero_as_no_return():
    depth_mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    for encoding in ("16UC1", "mono16"):
        metres = depth_to_meters(raw_message(depth_mm, encoding, padding=2, bigendian=True))
        assert np.isnan(metres[0, 0])
        np.testing.assert_allclose(metres[0, 1:], [1.0])
        np.testing.assert_allclose(metres[1], [1.5, 65.535], rtol=1e-6)


def test_32fc1_depth_is_metres_with_invalid_values_as_nan():
    depth = np.array([[0.0, -1.0, np.nan], [np.inf, 0.25, 3.5]], np.float32)
    metres = depth_to_meters(raw_message(depth, "32FC1"))
    assert np.isnan(metres[0]).all() and np.isnan(metres[1, 0])
    np.testing.assert_allclose(metres[1, 1:], [0.25, 3.5])


def test_colour_image_is_not_depth():
    with pytest.raises(ImageConversionError, match="depth encoding"):
        depth_to_meters(raw_message(random_pixels("rgb8", 2, 2, 0), "rgb8"))


# compressed_depth_image_transport (image_transport_plugins): data = a 12-byte ConfigHeader
# (int32 format = INV_DEPTH = 0, float32 depthParam[2]), then the 16-bit image as PNG, or as RVL
# (uint32 cols, uint32 rows, then the RVL words). Built here from that description.


def config_header(quant_a: float = 0.0, quant_b: float = 0.0, fmt: int = 0) -> bytes:
    return struct.pack("<iff", fmt, quant_a, quant_b)


def png16(values: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", values)
    assert ok and values.dtype == np.uint16
    return encoded.tobytes()


def rvl_encode(values: np.ndarray) -> bytes:
    """RVL (Wilson 2017) as compressed_depth_image_transport writes it: cols and rows as uint32,
    then runs of (zero count, non-zero count, zigzag deltas of the non-zero values), each number
    in 3-bit groups, least significant first, one group per nibble with 0x8 = "more follows",
    eight nibbles to a little-endian uint32, the first nibble in the high bits."""
    flat = [int(v) for v in values.ravel()]
    nibbles: list[int] = []

    def put(number):
        while True:
            group, number = number & 7, number >> 3
            nibbles.append(group | (8 if number else 0))
            if not number:
                return

    index, previous = 0, 0
    while index < len(flat):
        start = index
        while index < len(flat) and flat[index] == 0:
            index += 1
        put(index - start)
        start = index
        while index < len(flat) and flat[index] != 0:
            index += 1
        put(index - start)
        for value in flat[start:index]:
            delta = value - previous
            put(2 * delta if delta >= 0 else -2 * delta - 1)
            previous = value
    nibbles += [0] * (-len(nibbles) % 8)
    words = [int("".join(f"{n:x}" for n in nibbles[k:k + 8]), 16) for k in range(0, len(nibbles), 8)]
    return struct.pack("<II", values.shape[1], values.shape[0]) + struct.pack(f"<{len(words)}I", *words)


def quantize_inverse_depth(depth: np.ndarray, depth_max: float = 10.0, z0: float = 100.0):
    """The publisher's 32FC1 coding (float32 as in C++): A = z0 (z0 + 1), B = 1 - A / depth_max,
    value = uint16(A / depth + B) below depth_max, else 0 (NaN included)."""
    quant_a = np.float32(z0) * (np.float32(z0) + np.float32(1))
    quant_b = np.float32(1) - quant_a / np.float32(depth_max)
    with np.errstate(invalid="ignore", divide="ignore"):
        coded = np.where(depth < depth_max, quant_a / depth + quant_b, 0)
    return np.trunc(np.nan_to_num(coded)).astype(np.uint16), float(quant_a), float(quant_b)


def test_rvl_test_encoder_matches_a_hand_worked_example():
    # 2 zeros, 3 non-zeros (deltas 5, 0, 2 -> zigzag 10, 0, 4): nibbles 2 3 A 1 0 4, padded
    # with zeros to one word 0x23A10400, stored little-endian.
    assert rvl_encode(np.array([[0, 0, 5, 5, 7]], np.uint16)) == struct.pack("<II", 5, 1) + bytes.fromhex("0004a123")


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth png", "16UC1; compressedDepth", "16UC1; compressedDepth rvl",
                                 "mono16; compressedDepth png"])
def test_compressed_depth_16uc1_is_scaled_with_zero_as_no_return(fmt):
    depth_mm = np.array([[0, 1000, 1500], [65535, 0, 300]], np.uint16)
    payload = rvl_encode(depth_mm) if fmt.endswith("rvl") else png16(depth_mm)
    msg = CompressedImage(format=fmt, data=config_header() + payload)
    metres = depth_to_meters(msg)
    assert metres.dtype == np.float32 and metres.shape == (2, 3)
    assert np.isnan(metres[0, 0]) and np.isnan(metres[1, 1])
    np.testing.assert_allclose(metres[0, 1:], [1.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(metres[1, [0, 2]], [65.535, 0.3], rtol=1e-6)
    np.testing.assert_allclose(depth_to_meters(msg, depth_scale=0.0001)[0, 1], 0.1, rtol=1e-6)


@pytest.mark.parametrize("codec", ["png", "rvl"])
def test_compressed_depth_32fc1_round_trips_within_one_inverse_depth_step(codec):
    rng = np.random.default_rng(21)
    depth = rng.uniform(0.3, 10.0, (40, 50)).astype(np.float32)
    depth[0, :3] = [0.3, 9.999, np.nan]
    depth[1, 0] = 10.0  # at depth_max: coded as 0, no return
    coded, quant_a, quant_b = quantize_inverse_depth(depth)
    payload = rvl_encode(coded) if codec == "rvl" else png16(coded)
    metres = depth_to_meters(CompressedImage(format=f"32FC1; compressedDepth {codec}",
                                             data=config_header(quant_a, quant_b) + payload))
    assert metres.dtype == np.float32 and metres.shape == depth.shape
    invalid = ~(depth < 10.0)
    np.testing.assert_array_equal(np.isnan(metres), invalid)
    # The coded value is A / d + B truncated: one step of inverse depth, so the decoded depth
    # A / (value - B) lies in [d, d / (1 - d / A)], an error up to d^2 / (A - d) (9.9 mm at 10 m,
    # 9 um at 0.3 m with A = 10100), plus float32 rounding (a few 1e-6 relative).
    truth, decoded = depth[~invalid].astype(np.float64), metres[~invalid].astype(np.float64)
    step = truth ** 2 / (quant_a - truth)
    error = decoded - truth
    assert np.all(error >= -1e-5 * truth) and np.all(error <= step + 1e-5 * truth)
    assert error.max() > 0.5 * step.max()  # the bound is tight: the test sees the quantization


def test_compressed_depth_is_still_refused_as_colour():
    coded, quant_a, quant_b = quantize_inverse_depth(np.full((4, 4), 2.0, np.float32))
    for fmt in ("32FC1; compressedDepth png", "16UC1; compressedDepth png", "mono16; compressedDepth png"):
        msg = CompressedImage(format=fmt, data=config_header(quant_a, quant_b) + png16(coded))
        with pytest.raises(ImageConversionError, match="depth"):
            compressed_to_rgb8(msg)
        assert depth_to_meters(msg).shape == (4, 4)


def _malformed_compressed_depth():
    depth = np.arange(1, 13, dtype=np.uint16).reshape(3, 4) * 100
    good_png, good_rvl = png16(depth), rvl_encode(depth)
    grey8 = cv2.imencode(".png", depth.astype(np.uint8))[1].tobytes()
    colour16 = cv2.imencode(".png", np.dstack([depth] * 3))[1].tobytes()
    corrupt_png = bytearray(good_png)
    corrupt_png[40] ^= 0xFF
    cases = {
        "empty": ("16UC1; compressedDepth png", b"", "12-byte"),
        "short header": ("16UC1; compressedDepth png", config_header()[:8], "12-byte"),
        "header only": ("16UC1; compressedDepth png", config_header(), "12-byte"),
        "no header": ("16UC1; compressedDepth png", good_png, "format"),  # PNG magic read as the format
        "unknown format enum": ("16UC1; compressedDepth png", config_header(fmt=1) + good_png, "format"),
        "bad png": ("16UC1; compressedDepth png", config_header() + b"\x89PNG\r\n\x1a\n not a png", "not a PNG"),
        "corrupt png": ("16UC1; compressedDepth png", config_header() + bytes(corrupt_png), "corrupt or truncated"),
        "truncated png": ("16UC1; compressedDepth png", config_header() + good_png[:-30], "corrupt or truncated"),
        "8-bit png": ("16UC1; compressedDepth png", config_header() + grey8, "16-bit"),
        "3-channel png": ("32FC1; compressedDepth png", config_header(1.0, 0.0) + colour16, "16-bit"),
        "jpeg payload": ("16UC1; compressedDepth png",
                         config_header() + cv2.imencode(".jpg", depth.astype(np.uint8))[1].tobytes(), "not a PNG"),
        "rvl without size": ("16UC1; compressedDepth rvl", config_header() + good_rvl[:6], "rvl"),
        "rvl zero size": ("16UC1; compressedDepth rvl", config_header() + struct.pack("<II", 0, 3) + good_rvl[8:],
                          "zero size"),
        "rvl cut a word": ("16UC1; compressedDepth rvl", config_header() + good_rvl[:-4], "corrupt or truncated"),
        "rvl cut a byte": ("16UC1; compressedDepth rvl", config_header() + good_rvl[:-1], "corrupt or truncated"),
        "rvl extra words": ("16UC1; compressedDepth rvl", config_header() + good_rvl + bytes(8),
                            "corrupt or truncated"),
        "rvl size too small": ("16UC1; compressedDepth rvl",
                               config_header() + struct.pack("<II", 4, 2) + good_rvl[8:], "corrupt or truncated"),
        "unknown codec": ("16UC1; compressedDepth jpeg", config_header() + good_png, "compressedDepth"),
        "not depth": ("8UC1; compressedDepth png", config_header() + good_png, "depth encoding"),
        "compressed_image_transport": ("16UC1; png compressed mono16", good_png, "compressedDepth"),
        "jpeg": ("jpeg", cv2.imencode(".jpg", depth.astype(np.uint8))[1].tobytes(), "compressedDepth"),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize("fmt,data,message", _malformed_compressed_depth())
def test_malformed_compressed_depth_is_refused(fmt, data, message):
    with pytest.raises(ImageConversionError, match=message):
        depth_to_meters(CompressedImage(format=fmt, data=data))


@pytest.mark.parametrize("codec", ["png", "rvl"])
def test_compressed_depth_size_limit_is_checked_before_decoding(codec):
    depth = np.full((100, 100), 1000, np.uint16)
    payload = rvl_encode(depth) if codec == "rvl" else png16(depth)
    msg = CompressedImage(format=f"16UC1; compressedDepth {codec}", data=config_header() + payload)
    assert depth_to_meters(msg, max_pixels=10_000).shape == (100, 100)
    with pytest.raises(ImageConversionError, match="exceeds"):
        depth_to_meters(msg, max_pixels=9_999)
    if codec == "rvl":  # a few bytes of RVL can claim a huge image of zeros: refused unread
        bomb = config_header() + struct.pack("<II", 100_000, 100_000) + bytes(8)
        with pytest.raises(ImageConversionError, match="100000x100000 exceeds"):
            depth_to_meters(CompressedImage(format="16UC1; compressedDepth rvl", data=bomb), max_pixels=4_000_000)


@given(codec=st.sampled_from(["png", "rvl"]), source=st.sampled_from(["16UC1", "32FC1"]),
       data=st.binary(max_size=200), keep=st.integers(0, 400))
def test_arbitrary_compressed_depth_decodes_or_raises_conversion_error(codec, source, data, keep):
    depth = np.arange(1, 21, dtype=np.uint16).reshape(4, 5) * 50
    payload = (rvl_encode(depth) if codec == "rvl" else png16(depth))[:keep] + data
    msg = CompressedImage(format=f"{source}; compressedDepth {codec}", data=config_header(10100.0, -1009.0) + payload)
    try:
        metres = depth_to_meters(msg, max_pixels=10**6)
    except ImageConversionError:
        return
    assert metres.ndim == 2 and metres.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Masks, headers, compressed images


@given(st.integers(1, 16), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_mask_to_image_is_mono8_zero_or_255(height, width, seed):
    mask = np.random.default_rng(seed).random((height, width)) > 0.5
    msg = mask_to_image(mask)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono8", height, width, width)
    decoded = image_to_numpy(msg)
    assert set(np.unique(decoded)) <= {0, 255}
    np.testing.assert_array_equal(decoded == 255, mask)


def test_mask_keeps_the_source_header_and_rejects_non_2d():
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1700000000, 123456789
    msg = mask_to_image(np.eye(3, dtype=np.float32) * 0.5, header)
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1700000000, 123456789)
    np.testing.assert_array_equal(image_to_numpy(msg), np.eye(3, dtype=np.uint8) * 255)
    with pytest.raises(ImageConversionError):
        mask_to_image(np.zeros((2, 2, 1)))


@given(st.integers(1, 24), st.integers(1, 24), st.integers(0, 2**32 - 1),
       st.sampled_from(["rgb8", "bgr8", "mono8", "mono16"]))
def test_png_round_trip_is_exact(height, width, seed, encoding):
    pixels = random_pixels(encoding, height, width, seed)
    msg = numpy_to_compressed(pixels, encoding, "png")
    assert "png" in msg.format
    decoded = compressed_to_numpy(msg)
    if encoding == "rgb8":
        decoded = decoded[:, :, ::-1]
    np.testing.assert_array_equal(decoded, pixels)


def test_jpeg_round_trip_of_a_smooth_image_is_close():
    yy, xx = np.mgrid[0:120, 0:160]
    rgb = np.stack([xx * 255 // 159, yy * 255 // 119, np.full_like(xx, 128)], axis=2).astype(np.uint8)
    msg = numpy_to_compressed(rgb, "rgb8", "jpeg", jpeg_quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    decoded = compressed_to_rgb8(msg)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 2.0  # lossy codec: small mean error


@pytest.mark.parametrize("fmt,data", [
    ("jpeg", b""),
    ("jpeg", b"\xff\xd8\xff\xe0 definitely not a jpeg"),
    ("png", b"\x89PNG\r\n\x1a\n truncated"),
    ("tiff", b"II*\x00"),
    ("16UC1; compressedDepth png", b"\x00" * 16),
])
def test_bad_compressed_images_raise_conversion_error(fmt, data):
    with pytest.raises(ImageConversionError):
        compressed_to_rgb8(CompressedImage(format=fmt, data=data))


def textured_bgr(height: int = 240, width: int = 320) -> np.ndarray:
    """A camera-like frame: gradients plus noise, so every JPEG block carries entropy-coded data."""
    ys, xs = np.mgrid[0:height, 0:width]
    smooth = np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=2)
    noise = np.random.default_rng(0).integers(0, 40, (height, width, 3))
    return (smooth + noise).clip(0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, *params: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90, *params])
    assert ok
    return encoded.tobytes()


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def jpeg_scan_start(data: bytes) -> int:
    """Offset of the entropy-coded data: just after the start-of-scan (FF DA) segment."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")


def without_huffman_tables(data: bytes) -> bytes:
    """The JPEG minus its DHT segments, as UVC MJPEG cameras send frames (the decoder then uses
    the standard tables, which OpenCV's encoder also uses)."""
    out, pos = bytearray(data[:2]), 2
    while data[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] != 0xC4:
            out += data[pos:end]
        pos = end
    return bytes(out + data[pos:])


def png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, data length, type) of each chunk."""
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append((pos, length, data[pos + 4:pos + 8]))
        pos += 12 + length
    return chunks


def damaged_jpeg(kind: str) -> bytes:
    data = jpeg_bytes(textured_bgr())
    scan = jpeg_scan_start(data)
    middle = scan + (len(data) - scan) // 2
    if kind == "cut at 40% + EOI":  # an MJPEG USB camera that lost packets
        return data[:int(len(data) * 0.4)] + b"\xff\xd9"
    if kind == "cut at 70%":
        return data[:int(len(data) * 0.7)]
    if kind == "FF 00 run in the scan":  # stuffed FF bytes: valid syntax, wrong bits
        return data[:middle] + b"\xff\x00" * 32 + data[middle + 64:]
    if kind == "extraneous bytes before a marker":
        sos = data.index(b"\xff\xda")
        return data[:sos] + b"\x12\x34\x56" + data[sos:]
    if kind == "restart marker without restart interval":
        return data[:middle] + b"\xff\xd3" + data[middle:]
    raise AssertionError(kind)


# Zeroed bytes in the scan are not on the list: they are valid Huffman codes, and libjpeg
# decodes them without a warning (the damage cannot be seen from the stream).
JPEG_DAMAGE = ["cut at 40% + EOI", "cut at 70%", "FF 00 run in the scan", "extraneous bytes before a marker",
               "restart marker without restart interval"]


@pytest.mark.parametrize("kind", JPEG_DAMAGE)
def test_damaged_jpeg_is_refused(kind):
    msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=damaged_jpeg(kind))
    for decode in (compressed_to_numpy, compressed_to_rgb8):
        with pytest.raises(ImageConversionError, match=r"jpeg data is corrupt or truncated \(.+\)"):
            decode(msg)


@pytest.mark.parametrize("padding", [b"\x00" * 40, b"\xff" * 7, b"\x00" * 3000])
def test_padding_after_a_complete_scan_is_decoded_not_refused(padding):
    """Some UVC cameras pad every MJPEG frame before its end marker; libjpeg warns ("N extraneous
    bytes before marker 0xd9") but the picture is complete: refusing it would lose every frame."""
    intact = jpeg_bytes(textured_bgr())
    padded = intact[:-2] + padding + b"\xff\xd9"
    decoded = compressed_to_numpy(CompressedImage(format="jpeg", data=padded))
    assert np.array_equal(decoded, compressed_to_numpy(CompressedImage(format="jpeg", data=intact)))


def test_a_cut_jpeg_with_an_end_marker_is_what_opencv_decodes_silently():
    """Why the check exists: OpenCV returns a full-size frame with a grey lower half."""
    data = damaged_jpeg("cut at 40% + EOI")
    silently = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert silently is not None and silently.shape == (240, 320, 3)
    with pytest.raises(ImageConversionError, match="premature end of data segment"):
        compressed_to_numpy(CompressedImage(format="jpeg", data=data))


def damaged_png(kind: str) -> bytes:
    data = png_bytes(textured_bgr())
    chunks = png_chunks(data)
    pos, length, _ = next(c for c in chunks if c[2] == b"IDAT")
    if kind == "cut in IDAT":
        return data[:pos + 8 + length // 2]
    if kind == "cut in IDAT + IEND":
        return data[:pos + 8 + length // 2] + data[chunks[-1][0]:]
    if kind == "IDAT CRC corrupted":
        broken = bytearray(data)
        broken[pos + 8 + length] ^= 0xFF
        return bytes(broken)
    if kind == "IDAT byte flipped":
        broken = bytearray(data)
        broken[pos + 8 + length // 3] ^= 0x55
        return bytes(broken)
    if kind == "IEND missing":
        return data[:chunks[-1][0]]
    raise AssertionError(kind)


PNG_DAMAGE = {"cut in IDAT": "ends inside the IDAT chunk", "cut in IDAT + IEND": "IDAT",
              "IDAT CRC corrupted": "CRC", "IDAT byte flipped": "CRC", "IEND missing": "IEND"}


@pytest.mark.parametrize("kind", PNG_DAMAGE)
def test_damaged_png_is_refused_with_the_damage_named(kind):
    msg = CompressedImage(format="rgb8; png compressed bgr8", data=damaged_png(kind))
    for decode in (compressed_to_numpy, compressed_to_rgb8):
        with pytest.raises(ImageConversionError, match="png data is corrupt or truncated") as raised:
            decode(msg)
        assert PNG_DAMAGE[kind] in str(raised.value)


def _intact_frames():
    image = textured_bgr(61, 83)
    rgba16 = np.dstack([image.astype(np.uint16) * 257, np.full((61, 83), 40000, np.uint16)])
    return {
        "baseline jpeg": ("jpeg", jpeg_bytes(image)),
        "progressive jpeg": ("jpeg", jpeg_bytes(image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        "grayscale jpeg": ("jpeg", jpeg_bytes(image[:, :, 1])),
        "jpeg with restart markers": ("jpeg", jpeg_bytes(image, cv2.IMWRITE_JPEG_RST_INTERVAL, 2)),
        "4:4:4 jpeg": ("jpeg", jpeg_bytes(image, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                          cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)),
        "4:2:2 jpeg (UVC MJPEG)": ("jpeg", jpeg_bytes(image, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                      cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422)),
        "jpeg without Huffman tables (UVC MJPEG)": ("jpeg", without_huffman_tables(jpeg_bytes(image))),
        "16-bit png": ("png", png_bytes(image[:, :, 0].astype(np.uint16) * 201)),
        "rgba png": ("png", png_bytes(np.dstack([image, image[:, :, 0]]))),
        "16-bit rgba png": ("png", png_bytes(rgba16)),
        "grey png": ("png", png_bytes(image[:, :, 2])),
    }


@pytest.mark.parametrize("name", _intact_frames())
def test_intact_jpeg_and_png_decode_to_the_same_pixels_as_opencv(name):
    kind, data = _intact_frames()[name]
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    decoded = compressed_to_numpy(CompressedImage(format=kind, data=data))
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    np.testing.assert_array_equal(decoded, expected)
    rgb = compressed_to_rgb8(CompressedImage(format=kind, data=data))
    assert rgb.shape == expected.shape[:2] + (3,) and rgb.dtype == np.uint8


def test_cmyk_jpeg_decodes_as_opencv_does():
    image_module = pytest.importorskip("PIL.Image")
    import io

    buffer = io.BytesIO()
    image_module.fromarray(textured_bgr(40, 56)[:, :, ::-1].copy()).convert("CMYK").save(buffer, "JPEG")
    data = buffer.getvalue()
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(compressed_to_numpy(CompressedImage(format="jpeg", data=data)), expected)
    with pytest.raises(ImageConversionError, match="jpeg data is corrupt or truncated"):
        compressed_to_numpy(CompressedImage(format="jpeg", data=data[:len(data) * 2 // 3] + b"\xff\xd9"))


def test_size_limit_is_checked_from_the_header_before_decoding():
    # A "decompression bomb": a small PNG whose header claims 100000 x 100000 pixels.
    data = bytearray(numpy_to_compressed(np.zeros((8, 8), np.uint8), "mono8", "png").data)
    data[16:24] = (100_000).to_bytes(4, "big") * 2
    with pytest.raises(ImageConversionError, match="100000x100000 exceeds"):
        compressed_to_numpy(CompressedImage(format="png", data=bytes(data)), max_pixels=4_000_000)


@pytest.mark.parametrize("height,width", [(1, 1), (37, 53), (480, 640)])
def test_jpeg_and_png_sizes_are_read_from_the_header(height, width):
    pixels = random_pixels("bgr8", height, width, seed=5)
    for fmt in ("jpeg", "png"):
        msg = numpy_to_compressed(pixels, "bgr8", fmt)
        assert compressed._compressed_size(bytes(msg.data), fmt) == (height, width)


def test_other_formats_labelled_jpeg_or_png_are_refused():
    ok, bmp = cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))
    assert ok
    for fmt in ("jpeg", "png"):
        with pytest.raises(ImageConversionError, match="not a"):
            compressed_to_numpy(CompressedImage(format=fmt, data=bmp.tobytes()))


def test_compressed_size_limit():
    msg = numpy_to_compressed(np.zeros((100, 100, 3), np.uint8), "bgr8", "png")
    assert compressed_to_numpy(msg, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageConversionError, match="exceeds"):
        compressed_to_numpy(msg, max_pixels=9_999)


# ---------------------------------------------------------------------------------------------
# Malformed messages: one clear error type, never a crash or a wrong image


@given(image_cases(), st.integers(-7, 7))
def test_wrong_data_length_is_refused(case, delta):
    assume(delta != 0)
    encoding, pixels, padding, bigendian = case
    msg = raw_message(pixels, encoding, padding, bigendian)
    data = bytes(msg.data)
    if delta < 0:
        assume(len(data) + delta >= 0)
        msg.data = data[:delta]
    else:
        msg.data = data + b"\x00" * delta
    with pytest.raises(ImageConversionError, match="data holds"):
        image_to_numpy(msg)


@given(image_cases(), st.integers(1, 8))
def test_step_shorter_than_a_row_is_refused(case, shortfall):
    encoding, pixels, _, _ = case
    msg = raw_message(pixels, encoding)
    msg.step = msg.step - shortfall
    assume(msg.step >= 0)
    msg.data = bytes(msg.step * msg.height)  # consistent length, so only the step is wrong
    with pytest.raises(ImageConversionError, match="step"):
        image_to_numpy(msg)


@pytest.mark.parametrize("encoding", ["", "rgb9", "RGB8", "jpeg", "yuv420", "i420", "32UC1", "8UC5", "bayer_xyzw8",
                                      "8UC1\n", " rgb8"])
def test_unknown_encodings_are_refused(encoding):
    msg = Image(height=2, width=2, encoding=encoding, step=6, data=bytes(12))
    with pytest.raises(ImageConversionError, match="encoding"):
        image_to_numpy(msg)


@pytest.mark.parametrize("height,width", [(0, 0), (0, 4), (4, 0)])
def test_zero_sized_images_are_refused(height, width):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=b"")
    with pytest.raises(ImageConversionError, match="zero size"):
        image_to_rgb8(msg)


def test_empty_image_means_no_image_given():
    assert is_empty_image(Image())
    assert not is_empty_image(numpy_to_image(np.zeros((1, 1), np.uint8), "mono8"))
    assert not is_empty_image(Image(encoding="rgb8", data=b"\x00"))


def test_odd_width_packed_yuv_is_refused():
    msg = Image(height=2, width=3, encoding="yuyv", step=6, data=bytes(12))
    with pytest.raises(ImageConversionError, match="even"):
        image_to_numpy(msg)


def test_invalid_is_bigendian_flag_is_refused():
    msg = raw_message(random_pixels("mono16", 2, 2, 0), "mono16")
    msg.is_bigendian = 7
    with pytest.raises(ImageConversionError, match="is_bigendian"):
        image_to_numpy(msg)


def test_pixel_limit_is_checked_before_decoding():
    msg = raw_message(random_pixels("rgb8", 10, 10, 0), "rgb8")
    assert image_to_numpy(msg, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(ImageConversionError, match="exceeds"):
        image_to_numpy(msg, max_pixels=99)


@given(
    height=st.integers(0, 40), width=st.integers(0, 40), step=st.integers(0, 400),
    encoding=st.one_of(st.sampled_from(ALL_ENCODINGS), st.text(max_size=12)),
    is_bigendian=st.integers(0, 255), data=st.binary(max_size=2000),
)
def test_arbitrary_messages_decode_consistently_or_raise_conversion_error(
        height, width, step, encoding, is_bigendian, data):
    msg = Image(height=height, width=width, step=step, encoding=encoding,
                is_bigendian=is_bigendian, data=data)
    for decode in (image_to_numpy, image_to_rgb8):
        try:
            out = decode(msg)
        except ImageConversionError:
            continue
        assert out.shape[:2] == (height, width)
        assert len(data) == step * height


@given(fmt=st.sampled_from(["jpeg", "png"]), prefix=st.sampled_from([b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n"]),
       data=st.binary(max_size=300))
def test_arbitrary_compressed_data_decodes_or_raises_conversion_error(fmt, prefix, data):
    try:
        decoded = compressed_to_rgb8(CompressedImage(format=fmt, data=prefix + data), max_pixels=10**6)
    except ImageConversionError:
        return
    assert decoded.ndim == 3 and decoded.shape[2] == 3


@pytest.mark.parametrize("encoding,array", [
    ("rgb8", np.zeros((2, 2), np.uint8)),            # channels
    ("rgb8", np.zeros((2, 2, 3), np.uint16)),        # dtype
    ("mono16", np.zeros((2, 2), np.uint8)),
    ("32FC1", np.zeros((2, 2), np.float64)),
    ("yuyv", np.zeros((2, 3, 2), np.uint8)),         # odd width
    ("mono8", np.zeros((0, 3), np.uint8)),           # empty
    ("mono8", np.zeros((2, 2, 2, 2), np.uint8)),     # ndim
    ("nope", np.zeros((2, 2), np.uint8)),
])
def test_numpy_to_image_refuses_arrays_that_do_not_match_the_encoding(encoding, array):
    with pytest.raises(ImageConversionError):
        numpy_to_image(array, encoding)


@pytest.mark.parametrize("array,encoding,kwargs", [
    (np.zeros((4, 4), np.uint8), "rgb8", {}),               # 2-D array for a colour encoding
    (np.zeros((0, 4, 3), np.uint8), "bgr8", {}),            # empty
    (np.zeros((4, 4, 2), np.uint8), "yuv422", {}),          # not compressible
    (np.zeros((4, 4), np.uint8), "bayer_rggb8", {}),
    (np.zeros((4, 4, 3), np.float64), "bgr8", {}),          # wrong dtype
    (np.zeros((4, 4, 3), np.uint16), "bgr8", {}),
    (np.zeros((4, 4, 3), np.uint8), "bgr8", {"jpeg_quality": 10**12}),
])
def test_numpy_to_compressed_refuses_bad_input(array, encoding, kwargs):
    with pytest.raises(ImageConversionError):
        numpy_to_compressed(array, encoding, "jpeg", **kwargs)


def test_png_keeps_alpha_and_says_so():
    rgba = random_pixels("rgba8", 5, 7, seed=9)
    msg = numpy_to_compressed(rgba, "rgba8", "png")
    assert msg.format == "rgba8; png compressed bgra8"
    np.testing.assert_array_equal(compressed_to_numpy(msg), rgba[:, :, [2, 1, 0, 3]])


def test_jpeg_refuses_16_bit():
    with pytest.raises(ImageConversionError, match="8-bit"):
        numpy_to_compressed(np.zeros((4, 4), np.uint16), "mono16", "jpeg")


# ---------------------------------------------------------------------------------------------
# cv_bridge preference. A ROS 2 cv_bridge cannot be installed here (not on PyPI), so these use
# a stand-in module named as such; on a system ROS 2 install the real one takes this path.


class _StandInRos2CvBridge:
    """Stands in for ROS 2 ``cv_bridge.CvBridge`` (not installable here); decodes like it does."""

    calls = 0

    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        type(self).calls += 1
        if msg.encoding == "8UC1":  # vision_opencv#175: cv_bridge fails on some encodings
            raise RuntimeError("cv_bridge stand-in: unsupported")
        # Like cv_bridge: the row stride is taken as a whole number of pixels (step / bpp).
        fmt = image_format(msg.encoding)
        stride = msg.step // fmt.bytes_per_pixel
        flat = np.frombuffer(msg.data, fmt.dtype.newbyteorder(">" if msg.is_bigendian else "<"))
        rows = flat.reshape(msg.height, stride * fmt.channels)[:, : msg.width * fmt.channels]
        shape = (msg.height, msg.width) + ((fmt.channels,) if fmt.channels > 1 else ())
        return rows.reshape(shape)


@pytest.fixture
def stand_in_cv_bridge(monkeypatch):
    _StandInRos2CvBridge.calls = 0
    monkeypatch.setattr(raw, "_cv_bridge_checked", True)
    monkeypatch.setattr(raw, "_cv_bridge_instance", _StandInRos2CvBridge())
    return _StandInRos2CvBridge


def test_cv_bridge_is_used_when_present(stand_in_cv_bridge):
    pixels = random_pixels("bgr8", 5, 6, seed=2)
    np.testing.assert_array_equal(image_to_numpy(raw_message(pixels, "bgr8", padding=6)), pixels)
    assert stand_in_cv_bridge.calls == 1


def test_padding_that_is_not_whole_pixels_bypasses_cv_bridge(stand_in_cv_bridge):
    # cv_bridge would shift every row of this image (step 10 for 3 rgb8 pixels).
    pixels = random_pixels("rgb8", 2, 3, seed=6)
    np.testing.assert_array_equal(image_to_numpy(raw_message(pixels, "rgb8", padding=1)), pixels)
    assert stand_in_cv_bridge.calls == 0


def test_cv_bridge_failure_falls_back_to_our_decoder(stand_in_cv_bridge):
    pixels = random_pixels("8UC1", 5, 6, seed=2)
    np.testing.assert_array_equal(image_to_numpy(raw_message(pixels, "8UC1")), pixels)
    assert stand_in_cv_bridge.calls == 1


def test_malformed_messages_never_reach_cv_bridge(stand_in_cv_bridge):
    msg = raw_message(random_pixels("rgb8", 4, 4, 0), "rgb8")
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ImageConversionError):
        image_to_numpy(msg)
    assert stand_in_cv_bridge.calls == 0


def test_without_cv_bridge_our_decoder_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv_bridge", None)  # makes `import cv_bridge` fail
    monkeypatch.setattr(raw, "_cv_bridge_checked", False)
    monkeypatch.setattr(raw, "_cv_bridge_instance", None)
    assert raw._cv_bridge() is None
    pixels = random_pixels("rgba8", 3, 5, seed=4)
    np.testing.assert_array_equal(image_to_numpy(raw_message(pixels, "rgba8", 2)), pixels)


def _semi_planar(rgb: np.ndarray, encoding: str, padding: int = 0) -> Image:
    """An NV12/NV21/NV24 message of ``rgb`` (even size), rows padded by ``padding`` bytes."""
    height, width = rgb.shape[:2]
    step = width + padding
    if encoding == "nv24":
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)
        luma = np.zeros((height, step), np.uint8)
        luma[:, :width] = yuv[:, :, 0]
        chroma = np.zeros((height, 2 * step), np.uint8)
        chroma[:, :2 * width] = yuv[:, :, 1:].reshape(height, 2 * width)
        data = luma.tobytes() + chroma.tobytes()
    else:
        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)  # Y, then the U plane, then the V plane
        y = i420[:height]
        u = i420[height:height + height // 4].reshape(height // 2, width // 2)
        v = i420[height + height // 4:].reshape(height // 2, width // 2)
        first, second = (u, v) if encoding == "nv12" else (v, u)
        planes = np.zeros((height * 3 // 2, step), np.uint8)
        planes[:height, :width] = y
        planes[height:, :width] = np.stack([first, second], axis=2).reshape(height // 2, width)
        data = planes.tobytes()
    return Image(height=height, width=width, encoding=encoding, step=step, data=data)


@pytest.mark.parametrize("encoding", ["nv12", "nv21", "nv24"])
@pytest.mark.parametrize("padding", [0, 6])
def test_semi_planar_yuv_decodes_to_the_colour_it_was_made_from(encoding, padding):
    """Raspberry Pi (camera_ros) and OAK cameras publish NV21/NV12/NV24; a smooth image survives the
    round trip through YUV, and U/V swapped (NV12 read as NV21) would not."""
    ys, xs = np.mgrid[0:48, 0:64]
    rgb = np.stack([xs * 4, ys * 5, 255 - xs * 3], axis=2).clip(0, 255).astype(np.uint8)
    decoded = image_to_rgb8(_semi_planar(rgb, encoding, padding))
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 3
    if encoding != "nv24":
        swapped = "nv21" if encoding == "nv12" else "nv12"
        wrong = image_to_rgb8(Image(height=48, width=64, encoding=swapped, step=64 + padding,
                                    data=_semi_planar(rgb, encoding, padding).data))
        assert np.abs(wrong.astype(int) - rgb.astype(int)).mean() > 10


def test_semi_planar_sizes_are_checked():
    good = _semi_planar(np.zeros((4, 6, 3), np.uint8), "nv21")
    with pytest.raises(ImageConversionError, match="Y plane and chroma"):
        image_to_rgb8(Image(height=4, width=6, encoding="nv21", step=6, data=bytes(good.data)[:-1]))
    with pytest.raises(ImageConversionError, match="even"):
        image_to_rgb8(Image(height=3, width=6, encoding="nv12", step=6, data=bytes(27)))
    assert image_to_numpy(good).shape == (6, 6)  # as OpenCV stores NV21: Y rows, then chroma rows


def test_compressed_depth_is_not_segmented_as_colour():
    """compressed_image_transport sends 16-bit depth as "16UC1; png compressed": refused like raw 16UC1."""
    depth = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 500)
    message = numpy_to_compressed(depth, "16UC1", "png")
    assert message.format.startswith("16UC1;")
    with pytest.raises(ImageConversionError, match="depth"):
        compressed_to_rgb8(message)
    grey = numpy_to_compressed(depth, "mono16", "png")  # a 16-bit grey camera stays a colour image
    assert compressed_to_rgb8(grey).shape == (3, 4, 3)


# ---------------------------------------------------------------------------------------------
# Messages read from a bag: rosbags builds its own message classes (``data`` a uint8 array), and
# lisa_ros.images decodes them as it decodes rclpy messages.


def _through_a_bag(msg, typename: str):
    """``msg``'s fields in rosbags' class of ``typename``, serialised to CDR and read back as a
    bag reader returns them."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    stamp = types["builtin_interfaces/msg/Time"](sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec)
    header = types["std_msgs/msg/Header"](stamp=stamp, frame_id=msg.header.frame_id)
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if typename.endswith("CompressedImage"):
        built = types[typename](header=header, format=msg.format, data=data)
    else:
        built = types[typename](header=header, height=msg.height, width=msg.width, encoding=msg.encoding,
                                is_bigendian=msg.is_bigendian, step=msg.step, data=data)
    return store.deserialize_cdr(store.serialize_cdr(built, typename), typename)


def test_bag_messages_decode_as_rclpy_messages_do():
    from lisa_ros import images

    pixels = random_pixels("bgr8", 7, 9, seed=3)
    rclpy_msg = raw_message(pixels, "bgr8", padding=5)
    bag_msg = _through_a_bag(rclpy_msg, "sensor_msgs/msg/Image")
    assert isinstance(bag_msg.data, np.ndarray) and not isinstance(bag_msg, Image)
    np.testing.assert_array_equal(images.image_to_rgb8(bag_msg), image_to_rgb8(rclpy_msg))
    np.testing.assert_array_equal(images.image_to_rgb8(bag_msg), pixels[:, :, ::-1])

    depth_mm = np.array([[0, 1500], [2500, 65535]], np.uint16)
    for msg, typename in ((numpy_to_image(depth_mm, "16UC1"), "sensor_msgs/msg/Image"),
                          (numpy_to_compressed(depth_mm, "16UC1", "png"), "sensor_msgs/msg/CompressedImage")):
        bag_msg = _through_a_bag(msg, typename)
        if typename.endswith("CompressedImage"):  # compressed_depth_image_transport's layout
            bag_msg.format = "16UC1; compressedDepth png"
            bag_msg.data = np.frombuffer(struct.pack("<iff", 0, 0.0, 0.0) + bytes(msg.data), np.uint8)
        depth = images.depth_to_meters(bag_msg)
        assert np.isnan(depth[0, 0]) and depth[0, 1] == pytest.approx(1.5) and depth[1, 1] == pytest.approx(65.535)

    colour = numpy_to_compressed(pixels, "bgr8", "png")
    bag_msg = _through_a_bag(colour, "sensor_msgs/msg/CompressedImage")
    assert images.is_compressed(bag_msg) and not images.is_compressed(rclpy_msg)
    np.testing.assert_array_equal(images.compressed_to_rgb8(bag_msg), pixels[:, :, ::-1])
    bag_msg.data = bag_msg.data[:-20]  # cut short, as a truncated bag chunk would leave it
    with pytest.raises(ImageConversionError, match="corrupt or truncated"):
        images.compressed_to_rgb8(bag_msg)


def test_depth_compresses_into_the_compressed_depth_layout_and_back():
    """depth_to_compressed writes what compressed_depth_image_transport's PNG codec writes for
    16UC1; 32FC1 metres become millimetres, no return (NaN, <= 0, beyond 65.535 m) becomes 0."""
    from lisa_ros.ros.conversions import depth_to_compressed

    units = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    msg = depth_to_compressed(units, "16UC1")
    assert msg.format == "16UC1; compressedDepth png" and struct.unpack_from("<iff", bytes(msg.data)) == (0, 0.0, 0.0)
    assert np.array_equal(depth_to_meters(msg)[units > 0], units[units > 0] * np.float32(0.001))
    metres = np.array([[1.2344, np.nan, -1.0, 70.0]], np.float32)
    back = depth_to_meters(depth_to_compressed(metres, "32FC1"))
    assert back[0, 0] == pytest.approx(1.234, abs=1e-6) and not np.any(back[0, 1:] > 0)
    with pytest.raises(ImageConversionError, match="cannot compress depth in 'rgb8'"):
        depth_to_compressed(np.zeros((2, 2, 3), np.uint8), "rgb8")
