"""The bad-input corpus: hostile or broken images, boxes and request shapes each get a 4xx with a stable error
code (never a 5xx); valid oddities (CMYK, 16-bit, grayscale, RGBA, EXIF-rotated) are answered correctly; and
after the whole corpus, sent to a fresh service, it is still ready and still answers a good request."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from tests.bad_input_corpus import (
    BAD_BOXES,
    BAD_SHAPES,
    GOOD,
    MAX_BATCH_ITEMS,
    MAX_BODY_BYTES,
    MAX_BOXES,
    ODD_BUT_VALID,
    REFUSED_IMAGES,
    batch_post,
    corpus_client,
    exif_rotated_jpeg,
    keypoints,
    lossless_png_of,
    png_header_bomb,
    png_real_bomb,
    png_rgb16,
    post_form,
    post_raw,
    send_the_corpus,
)
from tests.helpers import assert_error, metric_samples, metric_value, photo, rss_bytes


@pytest.fixture(scope="module")
def client(tiny_onnx):
    with corpus_client(tiny_onnx) as client:
        yield client


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
