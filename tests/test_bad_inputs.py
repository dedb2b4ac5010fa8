"""The bad-input corpus: hostile or broken images, boxes and request shapes each get a 4xx with a stable error
code (never a 5xx); valid oddities (CMYK, 16-bit, grayscale, RGBA, EXIF-rotated) are answered correctly; and
after the whole corpus, sent to a fresh service, it is still ready and still answers a good request."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.settings import Settings
from tests.helpers import assert_error, encode, jpeg_bytes, metric_samples, metric_value, photo, rss_bytes

MAX_IMAGE_BYTES = 2_000_000
MAX_BODY_BYTES = 3_000_000
MAX_BOXES = 5
MAX_BATCH_ITEMS = 4


def corpus_client(tiny_onnx):
    settings = Settings(model_path=tiny_onnx, max_image_bytes=MAX_IMAGE_BYTES, max_body_bytes=MAX_BODY_BYTES,
                        max_boxes=MAX_BOXES, max_batch_items=MAX_BATCH_ITEMS, intra_op_threads=1)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client(tiny_onnx):
    with corpus_client(tiny_onnx) as client:
        yield client


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


@pytest.mark.parametrize("name", list(REFUSED_IMAGES))
def test_refused_images_as_raw_body_and_multipart(client, name):
    data, status, code = REFUSED_IMAGES[name]
    assert_error(post_raw(client, data, "image/png"), status, code)
    assert_error(post_form(client, data, "upload.bin", "application/octet-stream"), status, code)


def test_refused_images_in_a_batch_fail_only_their_own_item(client):
    names = ["zero bytes", "truncated JPEG", "animated PNG", "PNG header claiming 100000x100000"]
    items = [{"image_base64": base64.b64encode(REFUSED_IMAGES[n][0]).decode()} for n in names[:3]]
    items.append({"image_base64": base64.b64encode(GOOD).decode()})
    response = client.post("/v1/pose/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [False, False, False, True]
    assert [r["error"]["code"] for r in results[:3]] == [REFUSED_IMAGES[n][2] for n in names[:3]]


def test_header_bomb_is_refused_before_pixel_memory_is_allocated(client):
    post_form(client, GOOD)  # warm up every code path first
    for data in (png_header_bomb(), png_real_bomb()):
        before = rss_bytes()
        started = time.perf_counter()
        response = post_raw(client, data, "image/png")
        elapsed = time.perf_counter() - started
        grown = rss_bytes() - before
        assert_error(response, 413, "image_too_many_pixels")
        assert "pixels" in response.json()["error"]["message"]
        assert elapsed < 0.5, f"refusal took {elapsed:.2f} s: the pixels were decoded"
        assert grown < 20 * 2**20, f"RSS grew {grown / 2**20:.0f} MiB: pixel memory was allocated"


def test_real_bomb_is_small_but_over_the_pixel_limit():
    data = png_real_bomb()
    assert len(data) < 200_000 and Image.open(io.BytesIO(data)).size == (8000, 6000)


# -- request bodies over the byte limit ------------------------------------------------------------------------
def test_body_over_the_limit_with_content_length(client):
    assert_error(post_raw(client, b"\0" * (MAX_BODY_BYTES + 1), "image/jpeg"), 413, "payload_too_large")
    big = base64.b64encode(b"\0" * MAX_BODY_BYTES).decode()
    assert_error(client.post("/v1/pose/batch", json={"items": [{"image_base64": big}]}), 413, "payload_too_large")


def test_chunked_body_over_the_limit_without_content_length(client):
    def chunks():
        for _ in range(4):
            yield b"\0" * (MAX_BODY_BYTES // 3)

    response = client.post("/v1/pose", content=chunks(), headers={"content-type": "image/jpeg"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")

    def multipart_chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n"
        for _ in range(4):
            yield b"\0" * (MAX_BODY_BYTES // 3)
        yield b"\r\n--b--\r\n"

    response = client.post("/v1/pose", content=multipart_chunks(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(response, 413, "payload_too_large")


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


@pytest.mark.parametrize("name", list(ODD_BUT_VALID))
def test_odd_but_valid_images_are_decoded_like_their_rgb_equivalent(client, name):
    data = ODD_BUT_VALID[name]()
    boxes = json.dumps([[10, 20, 60, 120], [70, 30, 80, 180, 0.8]])
    response = post_form(client, data, "odd.img", "application/octet-stream", boxes=boxes)
    reference = post_form(client, lossless_png_of(data), "ref.png", "image/png", boxes=boxes)
    assert response.json()["image"] == {"width": 160, "height": 240}
    assert keypoints(response) == pytest.approx(keypoints(reference), abs=1e-4)


def test_16bit_png_keeps_the_high_byte():
    pixels = photo(seed=6).astype(np.uint16) * 257 + 3
    from posecore.imaging import decode_image

    decoded = decode_image(png_rgb16(pixels), 10**7, 10**7)
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, (pixels >> 8).astype(np.uint8))


def test_exif_rotation_is_applied(client):
    data = exif_rotated_jpeg()
    assert Image.open(io.BytesIO(data)).size == (160, 240)  # stored
    boxes = json.dumps([[20, 10, 150, 90]])  # in the displayed (rotated) frame
    response = post_form(client, data, boxes=boxes)
    assert response.json()["image"] == {"width": 240, "height": 160}
    reference = post_form(client, lossless_png_of(data), "ref.png", "image/png", boxes=boxes)
    assert reference.json()["image"] == {"width": 240, "height": 160}
    assert keypoints(response) == pytest.approx(keypoints(reference), abs=1e-4)
    # without boxes the whole displayed image is the person box
    assert post_form(client, data).json()["persons"][0]["box"] == [0, 0, 240, 160]


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


@pytest.mark.parametrize("name", list(BAD_BOXES))
def test_bad_boxes_are_refused(client, name):
    boxes, status, code = BAD_BOXES[name]
    assert_error(post_form(client, GOOD, boxes=boxes), status, code)
    if len(boxes) < 4000:  # a URL has its limits; the form field carries the big ones
        assert_error(post_raw(client, GOOD, boxes=boxes), status, code)


@pytest.mark.parametrize("box", [[1e300, 10, 50, 100], [10, 10, 1e300, 1e300], [-1e300, -1e300, 1e300, 1e300]])
def test_absurdly_large_finite_boxes_are_refused(client, box):
    """Values beyond 100 times the image size would overflow float32 into NaN keypoints: refused, never a 5xx."""
    response = post_form(client, GOOD, boxes=json.dumps([box]))
    assert_error(response, 422, "invalid_boxes")
    assert "100 times the image size" in response.json()["error"]["message"]


@pytest.mark.parametrize("box", [[10, 10, 1e-300, 1e-300], [10, 10, 5e-324, 100]])
def test_vanishingly_small_positive_boxes_get_finite_keypoints(client, box):
    response = post_form(client, GOOD, boxes=json.dumps([box]))
    (person,) = response.json()["persons"]
    assert response.status_code == 200 and all(np.isfinite(person["coco_keypoints"])), response.text


def test_boxes_partly_outside_the_image_are_fine(client):
    response = post_form(client, GOOD, boxes="[[-30, -40, 100, 150], [120, 200, 100, 100]]")
    assert len(keypoints(response)) == 2 * 17 * 3


def test_bad_boxes_in_a_batch_fail_only_their_item(client):
    good = base64.b64encode(GOOD).decode()
    items = [{"image_base64": good, "boxes": [[float("nan"), 1, 2, 3]]},
             {"image_base64": good, "boxes": [[10, 10, float("inf"), 100]]},
             {"image_base64": good, "boxes": [[10, 10, 50, 100]] * (MAX_BOXES + 1)},
             {"image_base64": good, "boxes": [[10, 10, 50, 100]]}]
    response = client.post("/v1/pose/batch", content=json.dumps({"items": items}),  # json.dumps writes NaN
                           headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["error"]["code"] if r["error"] else "ok" for r in results] == \
        ["invalid_boxes", "invalid_boxes", "too_many_boxes", "ok"]


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


@pytest.mark.parametrize("name", list(BAD_SHAPES))
def test_bad_batch_requests(client, name):
    body, status, code = BAD_SHAPES[name]
    assert_error(batch_post(client, body), status, code)


def test_batch_multipart_over_the_item_limit_and_without_files(client):
    files = [("images", (f"{i}.jpg", GOOD, "image/jpeg")) for i in range(MAX_BATCH_ITEMS + 1)]
    assert_error(client.post("/v1/pose/batch", files=files), 422, "too_many_items")
    files = [("images", (f"{i}.jpg", GOOD, "image/jpeg")) for i in range(MAX_BATCH_ITEMS * 3)]
    # far over: the multipart parser's file limit (max_batch_items + 1) stops reading first
    assert_error(client.post("/v1/pose/batch", files=files), 400, "invalid_request")
    assert_error(client.post("/v1/pose/batch", data={"boxes": "[]"}, files={"x": ("a", b"1", "text/plain")}),
                 400, "invalid_request")
    files = [("images", (f"{i}.jpg", GOOD, "image/jpeg")) for i in range(2)]
    assert_error(client.post("/v1/pose/batch", files=files, data={"boxes": "[null]"}), 422, "invalid_boxes")
    assert_error(client.post("/v1/pose/batch", files=files, data={"boxes": "{"}), 400, "invalid_json")
    for not_a_list in ("true", "7", '"boxes"', '{"0": null}'):  # found by the schema fuzzer: was a 500
        assert_error(client.post("/v1/pose/batch", files=files, data={"boxes": not_a_list}), 422, "invalid_boxes")
    response = client.post("/v1/pose/batch", files=files, data={"boxes": '[true, [[10, 10, 50, 100]]]'})
    assert [r["error"]["code"] if r["error"] else "ok" for r in response.json()["results"]] == ["invalid_boxes", "ok"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"params": {"flip": "maybe"}}, 400, "invalid_request"),
        ({"params": {"box_format": "polar"}}, 400, "invalid_request"),
        ({"data": {"box_format": "polar"}}, 400, "invalid_request"),
        ({"data": {"flip": "2"}}, 400, "invalid_request"),
        ({"data": {"boxes": ""}, "params": {"boxes": "[[1, 2"}}, 400, "invalid_json"),
    ],
)
def test_wrong_field_types_on_the_single_route(client, kwargs, status, code):
    response = client.post("/v1/pose", files={"image": ("p.jpg", GOOD, "image/jpeg")}, **kwargs)
    assert_error(response, status, code)


def test_odd_multipart_shapes(client):
    two = [("image", ("a.jpg", GOOD, "image/jpeg")), ("image", ("b.jpg", GOOD, "image/jpeg"))]
    assert_error(client.post("/v1/pose", files=two), 400, "invalid_request")
    assert_error(client.post("/v1/pose", files={"image": (None, "not a file")}), 400, "invalid_request")
    huge_field = client.post("/v1/pose", files={"image": ("p.jpg", GOOD, "image/jpeg"),
                                                "boxes": (None, "[" + "[10, 10, 50, 100]," * 60_000 + "]")})
    assert_error(huge_field, 400, "invalid_request")  # a text field over Starlette's 1 MiB part limit
    assert_error(client.post("/v1/pose", files={"image": ("p.jpg", GOOD, "image/jpeg"),
                                                "boxes": ("b.json", b"[]", "application/json")}),
                 400, "invalid_request")
    many = {f"field{i}": "x" for i in range(50)}
    assert_error(client.post("/v1/pose", files={"image": ("p.jpg", GOOD, "image/jpeg")}, data=many),
                 400, "invalid_request")
    broken = client.post("/v1/pose", content=b"--nope\r\n\r\ngarbage",
                         headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(broken, 400, "invalid_request")
    no_boundary = client.post("/v1/pose", content=b"x", headers={"content-type": "multipart/form-data"})
    assert_error(no_boundary, 400, "invalid_request")
    assert_error(client.post("/v1/pose", content=b"{}", headers={"content-type": "application/json"}),
                 415, "unsupported_media_type")
    assert_error(client.post("/v1/pose", content=b"x", headers={"content-length": "abc",
                                                                "content-type": "image/jpeg"}),
                 400, "invalid_request")


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


def test_still_ready_and_serving_after_the_whole_corpus(tiny_onnx):
    """A fresh service takes the whole corpus, then is still ready, still answers a good request, and no request
    of the corpus got a 5xx (counted by its own metrics)."""
    with corpus_client(tiny_onnx) as fresh:
        assert send_the_corpus(fresh) > 60
        assert fresh.get("/readyz").status_code == 200
        response = post_form(fresh, GOOD, boxes="[[10, 20, 60, 120]]")
        assert len(keypoints(response)) == 17 * 3
        text = fresh.get("/metrics").text
    requests = metric_samples(text, "pose_requests_total")
    refused = sum(count for labels, count in requests if labels["status"].startswith("4"))
    assert refused > 60, "the corpus did not reach the routes"
    assert not [labels for labels, _ in requests if labels["status"].startswith("5")], "a 5xx in the corpus"
    assert metric_value(text, "pose_errors_total", code="internal_error") == 0
