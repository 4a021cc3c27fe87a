"""Image conversions: round trips for every encoding, padding, endianness, and malformed messages.

Messages are built here byte by byte (independently of ``numpy_to_image``) so that a decoder
bug cannot be cancelled out by the matching encoder bug.
"""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

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


@given(image_cases(["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4", "rgb16", "bgr16"]))
def test_colour_encodings_decode_to_rgb(case):
    encoding, pixels, padding, bigendian = case
    rgb = image_to_rgb8(raw_message(pixels, encoding, padding, bigendian))
    eight_bit = (pixels >> 8).astype(np.uint8) if pixels.dtype == np.uint16 else pixels
    layout = image_format(encoding).layout
    expected = eight_bit[:, :, :3] if layout.startswith("rgb") else eight_bit[:, :, 2::-1]
    assert rgb.shape == pixels.shape[:2] + (3,) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected)


@given(image_cases(["mono8", "8UC1", "mono16"]))
def test_mono_encodings_decode_to_grey_rgb(case):
    encoding, pixels, padding, bigendian = case
    rgb = image_to_rgb8(raw_message(pixels, encoding, padding, bigendian))
    grey = (pixels >> 8).astype(np.uint8) if pixels.dtype == np.uint16 else pixels
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


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_mosaic_of_a_uniform_colour_demosaics_to_that_colour(pattern):
    colour = {"r": 200, "g": 90, "b": 20}
    mosaic = np.zeros((8, 10), np.uint8)
    for index, name in enumerate(pattern):
        mosaic[index // 2::2, index % 2::2] = colour[name]
    rgb = image_to_rgb8(raw_message(mosaic, f"bayer_{pattern}8"))
    np.testing.assert_array_equal(rgb[2:-2, 2:-2], np.broadcast_to([200, 90, 20], (4, 6, 3)))


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
        assert conversions._compressed_size(bytes(msg.data), fmt) == (height, width)


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
    monkeypatch.setattr(conversions, "_cv_bridge_checked", True)
    monkeypatch.setattr(conversions, "_cv_bridge_instance", _StandInRos2CvBridge())
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
    monkeypatch.setattr(conversions, "_cv_bridge_checked", False)
    monkeypatch.setattr(conversions, "_cv_bridge_instance", None)
    assert conversions._cv_bridge() is None
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
