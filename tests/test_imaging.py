"""posecore.imaging: formats, pixel modes, EXIF orientation, limits and refusals (images made here)."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from posecore.errors import PoseError
from posecore.imaging import decode_image, encode_image
from tests.helpers import encode

MAX_BYTES = 5_000_000
MAX_PIXELS = 20_000_000


def decode(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def refused(data: bytes, code: str, **limits) -> PoseError:
    with pytest.raises(PoseError) as info:
        decode(data, **limits)
    assert info.value.code == code, info.value.message
    assert info.value.message and info.value.message[0].isupper()
    return info.value


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


@pytest.fixture
def pattern() -> np.ndarray:
    """48x64 RGB: flat colour blocks aligned to JPEG's 16x16 blocks (so they survive it), red top-left."""
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :] = (30, 160, 90)
    rgb[:16, :32] = (220, 40, 40)
    return rgb


@pytest.mark.parametrize(
    "fmt,options,tolerance",
    [("JPEG", {"quality": 95, "subsampling": 0}, 2), ("PNG", {}, 0), ("WEBP", {"lossless": True}, 0), ("BMP", {}, 0)],
)
def test_supported_formats_decode_to_rgb(pattern, fmt, options, tolerance):
    rgb = decode(encode(Image.fromarray(pattern), fmt, **options))
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3) and rgb.flags.c_contiguous
    assert np.abs(rgb.astype(int) - pattern.astype(int))[2:-2, 2:-2].max() <= tolerance
    assert np.abs(rgb[5, 5].astype(int) - (220, 40, 40)).max() <= tolerance


def test_grayscale_is_replicated_to_three_channels():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for mode_image in (Image.fromarray(gray), Image.fromarray(gray).convert("LA")):
        rgb = decode(encode(mode_image, "PNG"))
        np.testing.assert_array_equal(rgb, np.repeat(gray[:, :, None], 3, axis=2))


def test_rgba_drops_alpha_without_compositing(pattern):
    rgba = np.dstack([pattern, np.full(pattern.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(decode(encode(Image.fromarray(rgba, "RGBA"), "PNG")), pattern)
    np.testing.assert_array_equal(decode(encode(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True)), pattern)


def test_palette_with_transparency_converts_through_the_palette():
    image = Image.new("P", (8, 6))
    image.putpalette([0, 0, 0, 250, 10, 20, 5, 6, 7] + [0] * (256 * 3 - 9))
    image.paste(1, (0, 0, 4, 6))
    image.paste(2, (4, 0, 8, 6))
    rgb = decode(encode(image, "PNG", transparency=1))
    np.testing.assert_array_equal(rgb[0, 0], (250, 10, 20))
    np.testing.assert_array_equal(rgb[0, 7], (5, 6, 7))


def test_cmyk_jpeg_converts_to_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red ink
    cmyk.paste((0, 0, 0, 255), (8, 0, 16, 16))  # black
    rgb = decode(encode(cmyk, "JPEG", quality=100))
    assert np.abs(rgb[8, 2].astype(int) - (255, 0, 0)).max() <= 3
    assert np.abs(rgb[8, 13].astype(int) - (0, 0, 0)).max() <= 3


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 40000, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    rgb = decode(encode(image, "PNG"))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 128, 156, 255]])  # high byte, not min(v, 255)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_sixteen_bit_rgb_and_gray_alpha_pngs_keep_the_high_byte():
    def png16(color_type: int, pixel: tuple[int, ...]) -> bytes:  # one 2x1 16-bit PNG, made by hand
        row = b"\x00" + struct.pack(f">{len(pixel)}H", *pixel) * 2
        header = struct.pack(">IIBBBBB", 2, 1, 16, color_type, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(row))
            + png_chunk(b"IEND", b"")
        )

    np.testing.assert_array_equal(decode(png16(2, (65535, 32768, 257)))[0, 0], (255, 128, 1))
    np.testing.assert_array_equal(decode(png16(6, (65535, 32768, 257, 9)))[0, 0], (255, 128, 1))
    np.testing.assert_array_equal(decode(png16(4, (40000, 5)))[0, 0], (156, 156, 156))


def test_multi_picture_jpeg_decodes_its_primary_image():
    # Phone cameras write MPO (a JPEG with extra pictures appended); it is a still photo, not an animation.
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="MPO", save_all=True, append_images=frames[1:])
    rgb = decode(buffer.getvalue())
    assert rgb.shape == (16, 16, 3) and rgb[8, 8, 0] > 240 and rgb[8, 8, 2] < 15


def test_exif_orientation_is_applied(pattern):
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    data = encode(Image.fromarray(pattern), "JPEG", quality=95, exif=exif.tobytes())
    rgb = decode(data)
    assert rgb.shape == (64, 48, 3)
    # The red top-left block of the stored image ends up top-right after the rotation.
    assert np.abs(rgb[5, 44].astype(int) - (220, 40, 40)).max() <= 8
    assert np.abs(rgb[5, 5].astype(int) - (30, 160, 90)).max() <= 8
    assert np.abs(rgb[40, 44].astype(int) - (30, 160, 90)).max() <= 8


def test_empty_and_oversized_inputs_are_refused(pattern):
    refused(b"", "empty_image")
    data = encode(Image.fromarray(pattern), "PNG")
    error = refused(data, "image_too_large", max_bytes=len(data) - 1)
    assert str(len(data)) in error.message
    assert decode(data, max_bytes=len(data)).shape == (48, 64, 3)


def test_truncated_jpeg_is_refused_not_padded():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    noisy = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noisy), "JPEG", quality=90)
    for cut in (len(data) // 2, len(data) - 64, 200):
        refused(data[:cut], "corrupt_image")


def test_corrupt_png_crc_and_random_bytes_are_refused(pattern):
    data = bytearray(encode(Image.fromarray(pattern), "PNG"))
    data[-20] ^= 0xFF  # inside the last IDAT chunk
    refused(bytes(data), "corrupt_image")
    refused(np.random.default_rng(1).bytes(2048), "corrupt_image")
    refused(b"\xff\xd8\xff" + b"\x00" * 50, "corrupt_image")


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_other_formats_are_unsupported(pattern, fmt):
    error = refused(encode(Image.fromarray(pattern), fmt), "unsupported_image_format")
    assert fmt in error.message


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_are_refused(fmt):
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    error = refused(buffer.getvalue(), "animated_image_unsupported")
    assert "3 frames" in error.message


def test_pixel_bomb_is_refused_from_the_header_before_decoding():
    # A hand-made PNG whose IHDR claims 100000 x 100000 RGB pixels (30 GB decoded) in a few dozen bytes.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )
    start = time.perf_counter()
    error = refused(data, "image_too_many_pixels")
    assert time.perf_counter() - start < 0.5
    assert "100000x100000" in error.message


def test_pillows_global_bomb_limit_neither_warns_nor_raises(pattern, monkeypatch):
    # Our max_pixels is the one limit; Pillow's MAX_IMAGE_PIXELS check (a warning above it, an error above
    # twice it) must never escape as a 500, whatever the process sets it to.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.fromarray(pattern), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode(data).shape == (48, 64, 3)


def test_pixel_limit_is_inclusive(pattern):
    data = encode(Image.fromarray(pattern), "PNG")
    assert decode(data, max_pixels=48 * 64).shape == (48, 64, 3)
    refused(data, "image_too_many_pixels", max_pixels=48 * 64 - 1)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_encode_image_round_trips(pattern, fmt):
    data = encode_image(pattern, fmt)
    back = decode(data)
    assert back.shape == pattern.shape
    if fmt == "png":
        np.testing.assert_array_equal(back, pattern)
    else:  # lossy, chroma subsampled: compare inside the colour blocks
        assert np.abs(back[8, 16].astype(int) - (220, 40, 40)).max() <= 8
        assert np.abs(back[32, 48].astype(int) - (30, 160, 90)).max() <= 8
    with pytest.raises(ValueError):
        encode_image(pattern, "gif")
