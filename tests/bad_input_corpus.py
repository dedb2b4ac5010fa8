"""The bad-input corpus of tests/test_bad_inputs.py: hostile or broken images, bad box lists and bad request
shapes, each with the status and stable code it must get; valid oddities that must be answered like their plain
RGB equivalent; the image builders they need; and the limits of the service they are sent to."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.settings import Settings
from tests.helpers import encode, jpeg_bytes, photo

MAX_IMAGE_BYTES = 2_000_000


MAX_BODY_BYTES = 3_000_000


MAX_BOXES = 5


MAX_BATCH_ITEMS = 4


def corpus_client(tiny_onnx):
    settings = Settings(model_path=tiny_onnx, max_image_bytes=MAX_IMAGE_BYTES, max_body_bytes=MAX_BODY_BYTES,
                        max_boxes=MAX_BOXES, max_batch_items=MAX_BATCH_ITEMS, intra_op_threads=1)
    return TestClient(create_app(settings))


# -- building the corpus -----------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def png_header_bomb() -> bytes:
    """A PNG whose header claims 100000 x 100000 RGB pixels (30 GB) with a few bytes of data after it."""
    return raw_png(100_000, 100_000, 8, 2, zlib.compress(b"\0" * 1000))


def png_real_bomb(width: int = 8000, height: int = 6000) -> bytes:
    """A complete, valid grayscale PNG of 48 Mpx (over the default 40 Mpx limit) that compresses to ~50 kB."""
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0 + the row
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return raw_png(width, height, 8, 0, idat)


def png_rgb16(pixels16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), written by hand."""
    height, width, _ = pixels16.shape
    rows = b"".join(b"\0" + pixels16[y].astype(">u2").tobytes() for y in range(height))
    return raw_png(width, height, 16, 2, zlib.compress(rows))


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(photo(64, 64, seed=i)) for i in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg() -> bytes:
    """160 x 240 stored pixels with EXIF Orientation 6: displayed rotated 90 degrees, i.e. 240 x 160."""
    image = Image.fromarray(photo(160, 240, seed=21))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=92, exif=exif.tobytes())


def lossless_png_of(data: bytes) -> bytes:
    """What a correct decoder makes of `data` (EXIF applied, converted to RGB), re-encoded losslessly."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode in ("I;16", "I;16B", "I"):
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8))
    return encode(image.convert("RGB"), "PNG")


# -- helpers ------------------------------------------------------------------------------------------------
def post_raw(client, data, content_type="image/jpeg", **params):
    return client.post("/v1/pose", content=data, headers={"content-type": content_type}, params=params)


def post_form(client, data: bytes, filename="p.jpg", content_type="image/jpeg", **form):
    return client.post("/v1/pose", files={"image": (filename, data, content_type)}, data=form)


# -- image bytes that are refused ----------------------------------------------------------------------------
GOOD = jpeg_bytes(160, 240, seed=1)


REFUSED_IMAGES = {
    "zero bytes": (b"", 400, "empty_image"),
    "truncated JPEG": (GOOD[: len(GOOD) // 2], 400, "corrupt_image"),
    "JPEG header only": (GOOD[:200], 400, "corrupt_image"),
    "random bytes": (np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8).tobytes(), 400,
                     "corrupt_image"),
    "PNG signature then noise": (b"\x89PNG\r\n\x1a\n" + b"\x13" * 300, 400, "corrupt_image"),
    "PNG with a broken CRC": (encode(Image.fromarray(photo(32, 32)), "PNG")[:-20] + b"\0" * 20, 400,
                              "corrupt_image"),
    "PNG header claiming 100000x100000": (png_header_bomb(), 413, "image_too_many_pixels"),
    "BMP header claiming 50000x50000": (b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
                                        + struct.pack("<IiiHHIIiiII", 40, 50_000, 50_000, 1, 24, 0, 0, 0, 0, 0, 0),
                                        413, "image_too_many_pixels"),
    "still GIF": (encode(Image.fromarray(photo(32, 32)).convert("P"), "GIF"), 415, "unsupported_image_format"),
    "animated GIF": (animated("GIF"), 415, "unsupported_image_format"),
    "animated PNG": (animated("PNG"), 415, "animated_image_unsupported"),
    "animated WebP": (animated("WEBP"), 415, "animated_image_unsupported"),
    "TIFF": (encode(Image.fromarray(photo(32, 32)), "TIFF"), 415, "unsupported_image_format"),
    "PDF": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 100, 415, "unsupported_image_format"),
    "over the image byte limit": (GOOD + b"\0" * MAX_IMAGE_BYTES, 413, "image_too_large"),
}


# -- valid oddities, answered correctly ------------------------------------------------------------------------
def keypoints(response) -> list[float]:
    assert response.status_code == 200, response.text
    return [v for p in response.json()["persons"] for v in p["coco_keypoints"]]


ODD_BUT_VALID = {
    "CMYK JPEG": lambda: encode(Image.fromarray(photo(seed=2)).convert("CMYK"), "JPEG", quality=92),
    "grayscale JPEG": lambda: encode(Image.fromarray(photo(seed=3)).convert("L"), "JPEG", quality=92),
    "grayscale PNG": lambda: encode(Image.fromarray(photo(seed=4)).convert("L"), "PNG"),
    "16-bit grayscale PNG": lambda: encode(Image.fromarray(photo(seed=5)[..., 0].astype(np.uint16) * 257), "PNG"),
    "16-bit RGB PNG": lambda: png_rgb16(photo(seed=6).astype(np.uint16) * 257 + 3),
    "RGBA PNG": lambda: encode(Image.fromarray(np.dstack([photo(seed=7), np.full((240, 160), 90, np.uint8)])), "PNG"),
    "palette PNG with transparency": lambda: encode(Image.fromarray(photo(seed=8)).convert("P"), "PNG",
                                                    transparency=0),
    "LA PNG": lambda: encode(Image.fromarray(photo(seed=9)).convert("LA"), "PNG"),
    "WebP": lambda: encode(Image.fromarray(photo(seed=10)), "WEBP", lossless=True),
    "BMP": lambda: encode(Image.fromarray(photo(seed=11)), "BMP"),
    "progressive JPEG": lambda: encode(Image.fromarray(photo(seed=12)), "JPEG", progressive=True),
}


# -- boxes ---------------------------------------------------------------------------------------------------
BAD_BOXES = {
    "NaN": ("[[NaN, 10, 50, 100]]", 422, "invalid_boxes"),
    "NaN score": ("[[10, 10, 50, 100, NaN]]", 422, "invalid_boxes"),
    "inf": ("[[10, 10, Infinity, 100]]", 422, "invalid_boxes"),
    "-inf": ("[[-Infinity, 10, 50, 100]]", 422, "invalid_boxes"),
    "overflowing literal": ("[[10, 10, 1e999, 100]]", 422, "invalid_boxes"),
    "negative width": ("[[10, 10, -50, 100]]", 422, "invalid_boxes"),
    "negative height": ("[[10, 10, 50, -1]]", 422, "invalid_boxes"),
    "zero size": ("[[10, 10, 0, 0]]", 422, "invalid_boxes"),
    "far outside": ("[[100000, 100000, 50, 100]]", 422, "invalid_boxes"),
    "far outside, negative": ("[[-1e12, -1e12, 50, 100]]", 422, "invalid_boxes"),
    "negative score": ("[[10, 10, 50, 100, -0.5]]", 422, "invalid_boxes"),
    "too few values": ("[[10, 10, 50]]", 422, "invalid_boxes"),
    "too many values": ("[[10, 10, 50, 100, 1, 2]]", 422, "invalid_boxes"),
    "not a list of lists": ("[10, 10, 50, 100]", 422, "invalid_boxes"),
    "an object": ('{"x": 10}', 422, "invalid_boxes"),
    "strings": ('[["10", "10", "50", "100"]]', 422, "invalid_boxes"),
    "booleans": ("[[true, 10, 50, 100]]", 422, "invalid_boxes"),
    "nulls": ("[[null, 10, 50, 100]]", 422, "invalid_boxes"),
    "more than the limit": (json.dumps([[10, 10, 50, 100]] * (MAX_BOXES + 1)), 422, "too_many_boxes"),
    "far more than the limit": (json.dumps([[10, 10, 50, 100]] * 10_000), 422, "too_many_boxes"),
    "malformed JSON": ("[[10, 10, 50", 400, "invalid_json"),
}


# -- request shape -------------------------------------------------------------------------------------------
def batch_post(client, body: bytes | str, content_type="application/json"):
    return client.post("/v1/pose/batch", content=body, headers={"content-type": content_type})


GOOD_B64 = base64.b64encode(GOOD).decode()


BAD_SHAPES = {
    "malformed JSON": ('{"items": [', 400, "invalid_json"),
    "not JSON at all": ("hello", 400, "invalid_json"),
    "empty body": ("", 400, "invalid_json"),
    "JSON null": ("null", 400, "invalid_request"),
    "a list, not an object": ("[]", 400, "invalid_request"),
    "items not a list": ('{"items": "x"}', 400, "invalid_request"),
    "no items": ('{"items": []}', 400, "invalid_request"),
    "image_base64 a number": ('{"items": [{"image_base64": 5}]}', 400, "invalid_request"),
    "boxes a string": (json.dumps({"items": [{"image_base64": GOOD_B64, "boxes": "[[1,2,3,4]]"}]}), 400,
                       "invalid_request"),
    "flip not a boolean": (json.dumps({"items": [{"image_base64": GOOD_B64}], "flip": "maybe"}), 400,
                           "invalid_request"),
    "unknown box_format": (json.dumps({"items": [{"image_base64": GOOD_B64}], "box_format": "polar"}), 400,
                           "invalid_request"),
    "unknown field": (json.dumps({"items": [{"image_base64": GOOD_B64}], "colour": "red"}), 400,
                      "invalid_request"),
    "over the item limit": (json.dumps({"items": [{"image_base64": GOOD_B64}] * (MAX_BATCH_ITEMS + 1)}), 422,
                            "too_many_items"),
    "invalid UTF-8": (b'{"items": [{"image_base64": "\xff\xfe"}]}', 400, "invalid_json"),
}


# -- after the corpus ------------------------------------------------------------------------------------------
def send_the_corpus(client: TestClient) -> int:
    """Every refused image, bad box list and bad batch shape above, each by every route it can take."""
    sent = 0
    for data, _, _ in REFUSED_IMAGES.values():
        post_raw(client, data, "image/png")
        post_form(client, data, "upload.bin", "application/octet-stream")
        sent += 2
    for boxes, _, _ in BAD_BOXES.values():
        post_form(client, GOOD, boxes=boxes)
        sent += 1
    for body, _, _ in BAD_SHAPES.values():
        batch_post(client, body)
        sent += 1
    return sent
