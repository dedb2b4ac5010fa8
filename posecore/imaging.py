"""Image bytes -> RGB uint8 array with size and pixel limits (and back, for the render endpoint).

Untrusted input: the format is recognised from its magic bytes, only JPEG, PNG, WebP and BMP are parsed,
the header's width x height is checked against the pixel limit before any pixel is decoded, and every
decoder failure becomes a PoseError with a stable code. Embedded ICC colour profiles are ignored, as the
official pipeline's cv2.imread ignores them: the model was trained on the raw pixel values.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from PIL import BmpImagePlugin, Image, ImageOps, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from posecore.decode_work import check_decoding_work
from posecore.errors import PoseError

# The image classes are used directly instead of Image.open: no other plugin ever sees the bytes, a
# multi-picture JPEG (MPO, common from phone cameras) decodes as its primary image instead of turning into
# a multi-frame image, and Pillow's global decompression-bomb check (Image.MAX_IMAGE_PIXELS, a warning or
# an exception depending on the size) is replaced by our own configurable `max_pixels` check. Pillow's
# DecompressionBombError is still mapped to 'image_too_many_pixels' should any code path raise it.
# ImageFile.LOAD_TRUNCATED_IMAGES is left False, so a truncated file is refused instead of padded grey.
_DECODERS: dict[str, type] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
}

# Recognised but refused formats, so the caller hears "unsupported" rather than "corrupt".
_OTHER_FORMATS: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"ftyp", 4, "HEIF/AVIF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "PSD"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", 0, "JPEG XL"),
    (b"qoif", 0, "QOI"),
    (b"%PDF", 0, "PDF"),
)

_SUPPORTED = "JPEG, PNG, WebP or BMP"
_ORIENTATION = 0x0112  # the EXIF Orientation tag
# Limits for the photos a tool reads from its own disk (evaluation, calibration, the bench): trusted, so only
# absurd files are refused. The service's own limits are its settings.
LOCAL_MAX_IMAGE_BYTES = 200_000_000
LOCAL_MAX_IMAGE_PIXELS = 400_000_000
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def sniff_format(data: bytes) -> str | None:
    """'JPEG' | 'PNG' | 'WEBP' | 'BMP' from the magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM":
        return "BMP"
    return None


def read_header(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Every check that needs only the header, before any pixel is decoded: size, format, pixel count, frames.

    Returns the opened (not yet loaded) image; `.size` is its width and height.
    """
    size = len(data)
    if size == 0:
        raise PoseError("empty_image", "The image is empty (0 bytes).")
    if size > max_bytes:
        raise PoseError("image_too_large", f"The image is {size} bytes; at most {max_bytes} bytes are accepted.")
    image = _open_header(bytes(data[:16]), data)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise PoseError("corrupt_image", f"The {image.format} header gives an empty size {width}x{height}.")
    if width * height > max_pixels:
        raise PoseError(
            "image_too_many_pixels",
            f"The image is {width}x{height} = {width * height} pixels; at most {max_pixels} are accepted.",
        )
    frames: int = getattr(image, "n_frames", 1)
    if frames > 1:
        raise PoseError(
            "animated_image_unsupported",
            f"The {image.format} image is animated ({frames} frames); send a single still image.",
        )
    return image


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Encoded image -> RGB uint8 (H, W, 3), C-contiguous, EXIF orientation applied.

    The array is a read-only view of the decoded pixels (no extra copy); copy it before drawing on it.
    Raises PoseError: empty_image, image_too_large, unsupported_image_format, corrupt_image,
    image_too_complex (decoding work bounded from the file's structure first: posecore/decode_work.py),
    image_too_many_pixels, animated_image_unsupported.
    """
    return decode_opened(read_header(data, max_bytes, max_pixels))


def decode_opened(image: Image.Image) -> np.ndarray:
    """The pixels of an image `read_header` opened (and checked): RGB uint8 (H, W, 3), EXIF orientation applied.

    For callers that read the header first (the serving layer admits by pixel count before decoding), so the
    header checks and the structure walk run once.
    """
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise PoseError("image_too_many_pixels", f"The image has too many pixels: {exc}") from None
    except Exception as exc:  # any decoder failure on untrusted bytes is the caller's corrupt file
        raise PoseError("corrupt_image", f"The {image.format} image could not be decoded: {exc}") from None
    _apply_exif_orientation(image)
    return _to_rgb_array(image)


def _open_header(prefix: bytes, data: bytes) -> Image.Image:
    """Parse only the header of a supported format (no pixels decoded yet)."""
    fmt = sniff_format(prefix)
    if fmt is None:
        for magic, offset, name in _OTHER_FORMATS:
            if prefix[offset : offset + len(magic)] == magic:
                raise PoseError(
                    "unsupported_image_format", f"{name} images are not supported; send {_SUPPORTED}."
                )
        raise PoseError("corrupt_image", f"The data is not a recognisable image; send {_SUPPORTED}.")
    check_decoding_work(fmt, data)  # before Pillow parses anything: its header parsing is Python, per segment
    try:
        return _DECODERS[fmt](io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise PoseError("image_too_many_pixels", f"The image has too many pixels: {exc}") from None
    except Exception as exc:
        raise PoseError("corrupt_image", f"The {fmt} header could not be read: {exc}") from None


def oriented_size(header: Image.Image) -> tuple[int, int]:
    """The (width, height) the decoded image will have, EXIF orientation applied, from an opened header."""
    width, height = header.size
    with contextlib.suppress(Exception):  # as _apply_exif_orientation: unreadable EXIF leaves the image as is
        if header.getexif().get(_ORIENTATION) in (5, 6, 7, 8):  # transposed or rotated by 90 degrees
            return height, width
    return width, height


def _apply_exif_orientation(image: Image.Image) -> None:
    """Rotate/flip in place as the EXIF Orientation tag says. Unreadable EXIF is ignored, not refused."""
    with contextlib.suppress(Exception):  # a broken EXIF block should not cost the caller a decodable photo
        ImageOps.exif_transpose(image, in_place=True)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert() clips 16-bit values at 255; keep the high byte instead (65535 -> 255),
        # as Pillow itself does for 16-bit RGB PNGs.
        gray = (np.asarray(image).astype(np.uint32, copy=False).clip(0, 65535) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    # Alpha (and a palette's transparency) is dropped, not composited: the model never saw alpha.
    image.info.pop("transparency", None)
    try:
        return np.asarray(image.convert("RGB"))
    except Exception as exc:
        raise PoseError(
            "unsupported_image_format", f"Images in pixel mode {image.mode} are not supported: {exc}"
        ) from None


def encode_image(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG or PNG bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(rgb))
    fmt = fmt.lower()
    if fmt in ("jpeg", "jpg"):
        image.save(buffer, format="JPEG", quality=quality)
    elif fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)  # fast; size matters less than latency here
    else:
        raise ValueError(f"unknown image format {fmt!r}; use 'jpeg' or 'png'")
    return buffer.getvalue()
