"""The HTTP API end to end, in-process (TestClient runs the real lifespan, ONNX Runtime and batcher)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from posecore.coco import KEYPOINT_NAMES, SKELETON
from service.main import create_app
from service.render import LIMB_COLOR
from service.settings import Settings
from tests.fakes import PeakBackend, app_with
from tests.helpers import assert_error, decode_rgb, jpeg_bytes, png_bytes

STAGES = {"decode", "preprocess", "queue", "inference", "postprocess"}


@pytest.fixture(scope="module")
def client(tiny_onnx):
    app = create_app(Settings(model_path=tiny_onnx, max_batch_items=4, max_boxes=5))
    with TestClient(app) as client:
        yield client


def post_image(client, data: bytes, **form):
    return client.post("/v1/pose", files={"image": ("photo.jpg", data, "image/jpeg")}, data=form)


def test_probes(client):
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_whole_image_is_one_person_when_no_boxes(client):
    response = post_image(client, jpeg_bytes(160, 240))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 160, "height": 240}
    assert body["model"]["trained"] is False and "UNTRAINED" in body["model"]["warning"]
    assert body["model"]["provider"] == "CPUExecutionProvider"
    (person,) = body["persons"]
    assert person["box"] == [0, 0, 160, 240]
    assert [k["name"] for k in person["keypoints"]] == list(KEYPOINT_NAMES)
    flat = [v for k in person["keypoints"] for v in (k["x"], k["y"], k["score"])]
    assert person["coco_keypoints"] == pytest.approx(flat)
    assert set(body["timings_ms"]) == STAGES
    assert "inference;dur=" in response.headers["server-timing"]
    assert response.headers["x-request-id"]


def test_boxes_give_one_person_each_with_keypoints_near_the_box(client):
    boxes = [[10, 20, 60, 120], [80, 40, 50, 100, 0.5]]
    body = post_image(client, jpeg_bytes(), boxes=json.dumps(boxes)).json()
    assert [p["box"] for p in body["persons"]] == [[10, 20, 60, 120], [80, 40, 50, 100]]
    assert [p["box_score"] for p in body["persons"]] == [1.0, 0.5]
    for person, (x, y, w, h, *_) in zip(body["persons"], boxes, strict=True):
        for k in person["keypoints"]:  # the padded crop region: box +- 25% plus the aspect correction
            assert x - w <= k["x"] <= x + 2 * w and y - h <= k["y"] <= y + 2 * h


def test_raw_body_with_query_boxes_equals_multipart(client):
    data = jpeg_bytes(seed=3)
    boxes = json.dumps([[10, 20, 60, 120]])
    raw = client.post("/v1/pose", content=data, headers={"content-type": "image/jpeg"}, params={"boxes": boxes})
    multipart = post_image(client, data, boxes=boxes)
    assert raw.status_code == 200, raw.text
    assert raw.json()["persons"] == multipart.json()["persons"]


def test_xyxy_boxes_are_converted(client):
    data = jpeg_bytes(seed=4)
    xywh = post_image(client, data, boxes="[[10, 20, 60, 120]]").json()
    xyxy = post_image(client, data, boxes="[[10, 20, 70, 140]]", box_format="xyxy").json()
    assert xyxy["persons"] == xywh["persons"]


def test_flip_test_runs_and_changes_the_heatmaps(client):
    data = jpeg_bytes(seed=5)
    plain = post_image(client, data, flip="false").json()
    flipped = post_image(client, data, flip="true").json()
    assert flipped["flip"] is True and plain["flip"] is False
    assert flipped["persons"][0]["coco_keypoints"] != plain["persons"][0]["coco_keypoints"]


def test_an_empty_box_list_means_nobody(client):
    body = post_image(client, jpeg_bytes(), boxes="[]").json()
    assert body["persons"] == []


def test_batch_json_reports_per_item_results_and_errors(client):
    good = base64.b64encode(jpeg_bytes(seed=1)).decode()
    corrupt = base64.b64encode(b"\xff\xd8\xff\xe0 not really a jpeg").decode()
    response = client.post("/v1/pose/batch", json={"items": [
        {"image_base64": good, "boxes": [[10, 20, 60, 120]]},
        {"image_base64": "%%% not base64"},
        {"image_base64": corrupt},
        {"image_base64": good, "boxes": [[0, 0, -5, 10]]},
    ]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False, False, False]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert len(results[0]["result"]["persons"]) == 1
    assert [r["error"]["code"] for r in results[1:]] == ["invalid_request", "corrupt_image", "invalid_boxes"]


def test_batch_multipart_with_several_files(client):
    files = [("images", (f"{i}.jpg", jpeg_bytes(seed=i), "image/jpeg")) for i in range(3)]
    response = client.post("/v1/pose/batch", files=files, data={"boxes": json.dumps([None, [[5, 5, 50, 90]], None])})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert all(r["ok"] for r in results) and len(results) == 3
    assert results[1]["result"]["persons"][0]["box"] == [5, 5, 50, 90]


def test_batch_over_the_item_limit_is_refused(client):
    item = {"image_base64": base64.b64encode(jpeg_bytes()).decode()}
    assert_error(client.post("/v1/pose/batch", json={"items": [item] * 5}), 422, "too_many_items")


def test_model_card_endpoint(client):
    card = client.get("/v1/model").json()
    assert card["keypoints"] == list(KEYPOINT_NAMES)
    assert card["skeleton"] == [list(e) for e in SKELETON]
    assert card["flip_pairs"][0] == [1, 2]
    assert card["input"]["height"] == 256 and card["input"]["width"] == 192
    assert card["trained"] is False and card["card_found"] is True
    assert card["provider"] == "CPUExecutionProvider" and card["provider_ok"] is True


def test_metrics_exposes_requests_stages_and_model(client):
    post_image(client, jpeg_bytes())
    text = client.get("/metrics").text
    assert 'pose_requests_total{endpoint="/v1/pose",status="200"}' in text
    for stage in STAGES:
        assert f'pose_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert "pose_batch_size_bucket" in text and "pose_persons_per_image_bucket" in text
    assert 'trained="false"' in text and 'provider="CPUExecutionProvider"' in text
    assert "pose_ready 1.0" in text


def test_render_returns_an_image_with_skeletons(client):
    response = client.post("/v1/pose/render", files={"image": ("p.jpg", jpeg_bytes(), "image/jpeg")},
                           params={"format": "png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert response.headers["x-model-trained"] == "false"


# -- render: a limb is drawn where the keypoints are --------------------------------------------------------------
LIMB = (5, 7)  # left shoulder -> left elbow, an edge of the COCO skeleton
LIMB_PEAKS = {5: (12, 16), 7: (36, 48)}  # heatmap (x, y) of the two joints; every other joint has no peak
GRAY = 128


def peak_client(peak: float) -> TestClient:
    return TestClient(app_with(PeakBackend(peak, LIMB_PEAKS)))


def colours_along(image: np.ndarray, start: np.ndarray, end: np.ndarray, offset_px: float = 0.0) -> np.ndarray:
    """RGB values at 13 points on the segment's middle 60% (clear of the joint dots), optionally moved
    `offset_px` sideways."""
    direction = (end - start) / np.linalg.norm(end - start)
    normal = np.array([-direction[1], direction[0]])
    points = [start + t * (end - start) + offset_px * normal for t in np.linspace(0.2, 0.8, 13)]
    return np.array([image[round(y), round(x)] for x, y in points]).astype(int)


@pytest.mark.parametrize(("peak", "drawn"), [(0.9, True), (0.1, False)], ids=["confident", "below-threshold"])
def test_render_draws_the_limb_between_two_confident_keypoints(peak, drawn):
    photo = np.full((800, 600, 3), GRAY, np.uint8)
    with peak_client(peak) as client:
        pose = client.post("/v1/pose", files={"image": ("gray.png", png_bytes(photo), "image/png")})
        rendered = client.post("/v1/pose/render", files={"image": ("gray.png", png_bytes(photo), "image/png")},
                               params={"format": "png"})
    assert pose.status_code == 200 and rendered.status_code == 200, (pose.text, rendered.text)
    (person,) = pose.json()["persons"]
    joints = {i: np.array([k["x"], k["y"]]) for i, k in enumerate(person["keypoints"]) if k["score"] > 0}
    assert set(joints) == set(LIMB) and LIMB in SKELETON
    start, end = joints[LIMB[0]], joints[LIMB[1]]
    assert np.linalg.norm(end - start) > 200  # a long limb, well inside the 600 x 800 photo

    image = decode_rgb(rendered.content)
    assert image.shape == photo.shape
    on_limb = colours_along(image, start, end)
    beside_limb = colours_along(image, start, end, offset_px=20)
    assert (beside_limb == GRAY).all(), "pixels away from the limb changed"
    if drawn:
        assert (np.abs(on_limb - np.array(LIMB_COLOR)).max(axis=1) <= 40).all(), on_limb
    else:  # joints under the 0.2 keypoint threshold: no limb
        assert (on_limb == GRAY).all(), on_limb


def test_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "v1/pose" in page.text


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": b"", "headers": {"content-type": "image/jpeg"}}, 400, "empty_image"),
        ({"content": b"\x00garbage" * 10, "headers": {"content-type": "image/png"}}, 400, "corrupt_image"),
        ({"files": {"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, "data": {"boxes": "[[1, 2"}}, 400, "invalid_json"),
        ({"files": {"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, "data": {"boxes": "[[1, 2, 3]]"}}, 422,
         "invalid_boxes"),
        ({"files": {"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, "data": {"boxes": "[[1, 2, 0, 5]]"}}, 422,
         "invalid_boxes"),
        ({"files": {"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, "data": {"boxes": json.dumps([[1, 2, 3, 4]] * 6)}},
         422, "too_many_boxes"),
        ({"files": {"image": ("a.jpg", jpeg_bytes(), "image/jpeg")},
          "data": {"boxes": "[[1" + "0" * 400 + ", 0, 9, 9]]"}}, 422, "invalid_boxes"),
        ({"files": {"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, "data": {"boxes": "[" * 100000 + "]" * 100000}},
         400, "invalid_json"),
        ({"files": {"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, "data": {"boxes": "[[1, 2, 30, 40, 1e300]]"}},
         422, "invalid_boxes"),
        ({"files": {"other": ("a.jpg", jpeg_bytes(), "image/jpeg")}}, 400, "invalid_request"),
        ({"files": {"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, "data": {"flip": "maybe"}}, 400,
         "invalid_request"),
    ],
)
def test_bad_requests_get_stable_4xx_codes(client, kwargs, status, code):
    assert_error(client.post("/v1/pose", **kwargs), status, code)


def test_unknown_route_and_method(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/pose"), 405, "method_not_allowed")


def test_caller_request_id_is_echoed(client):
    response = client.get("/livez", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
