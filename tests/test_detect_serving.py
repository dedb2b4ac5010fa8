"""The person detector in front of the pose model (issue 13): a bare photo returns every person.

A synthetic YOLOX-layout detector (tests/detector_model.py) whose output encodes a known scene (two people, a
near-duplicate that NMS removes, a faint person under the threshold, a car) drives the real service in-process.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.render import BOX_COLOR
from service.settings import Settings
from tests.detector_model import SCENE_INPUT_HW, build_scene_detector
from tests.helpers import ROOT, assert_error, decode_rgb, jpeg_bytes, metric_value, png_bytes

IMAGE_WH = (320, 240)


@pytest.fixture(scope="module")
def scene_detector(tmp_path_factory):
    return build_scene_detector(tmp_path_factory.mktemp("detector") / "scene.onnx", IMAGE_WH)


@pytest.fixture(scope="module")
def client(tiny_onnx, scene_detector):
    path, _ = scene_detector
    app = create_app(Settings(model_path=tiny_onnx, detector_path=path, provider="cpu", max_batch_items=4))
    with TestClient(app) as client:
        yield client


def post(client, data: bytes, **form):
    return client.post("/v1/pose", files={"image": ("photo.jpg", data, "image/jpeg")}, data=form)


def test_a_bare_photo_returns_exactly_the_detected_people(client, scene_detector):
    _, scene = scene_detector
    image = jpeg_bytes(*IMAGE_WH)
    response = post(client, image)
    assert response.status_code == 200, response.text
    body = response.json()
    persons = body["persons"]
    assert len(persons) == len(scene.persons) == 2  # not the duplicate, the faint one or the car
    got = np.array([[*p["box"], p["box_score"]] for p in persons])
    np.testing.assert_allclose(got, scene.persons, atol=1e-3)
    assert "detect" in body["timings_ms"] and "detect;dur=" in response.headers["server-timing"]
    # the same boxes given by the caller: the very same keypoints (the detector only chose the crops)
    given = post(client, image, boxes=json.dumps(got.tolist())).json()
    for detected, explicit in zip(persons, given["persons"], strict=False):
        assert detected["keypoints"] == explicit["keypoints"]
        assert detected["score"] == pytest.approx(explicit["score"])
    assert "detect" not in given["timings_ms"]


def test_detect_false_and_empty_boxes_keep_their_meaning(client):
    image = jpeg_bytes(*IMAGE_WH)
    whole = post(client, image, detect="false").json()
    assert [p["box"] for p in whole["persons"]] == [[0, 0, *IMAGE_WH]]
    query = client.post("/v1/pose", params={"detect": "false"}, content=image, headers={"content-type": "image/jpeg"})
    assert [p["box"] for p in query.json()["persons"]] == [[0, 0, *IMAGE_WH]]
    nobody = post(client, image, boxes="[]").json()
    assert nobody["persons"] == []
    assert_error(post(client, image, detect="maybe"), 400, "invalid_request")


def test_the_batch_endpoint_detects_per_item(client, scene_detector):
    _, scene = scene_detector
    encoded = base64.b64encode(jpeg_bytes(*IMAGE_WH)).decode()
    response = client.post("/v1/pose/batch", json={"items": [{"image_base64": encoded},
                                                             {"image_base64": encoded, "boxes": [[1, 2, 50, 80]]}]})
    first, second = response.json()["results"]
    assert len(first["result"]["persons"]) == len(scene.persons)
    assert [p["box"] for p in second["result"]["persons"]] == [[1, 2, 50, 80]]
    detect_off = client.post("/v1/pose/batch", json={"items": [{"image_base64": encoded}], "detect": False})
    assert [p["box"] for p in detect_off.json()["results"][0]["result"]["persons"]] == [[0, 0, *IMAGE_WH]]


def test_render_draws_every_detected_person_with_their_box(client, scene_detector):
    _, scene = scene_detector
    gray = np.full((IMAGE_WH[1], IMAGE_WH[0], 3), 128, np.uint8)
    response = client.post("/v1/pose/render", params={"format": "png"},
                           files={"image": ("p.png", png_bytes(gray), "image/png")})
    assert response.status_code == 200, response.text
    drawn = decode_rgb(response.content)
    for x, y, w, h, _ in scene.persons:
        top_edge = drawn[round(y), round(x + w / 2)]
        assert tuple(top_edge) == BOX_COLOR, (x, y, w, h)


def test_metrics_and_model_card_show_the_detector(client, scene_detector):
    post(client, jpeg_bytes(*IMAGE_WH))
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "pose_stage_duration_seconds_count", stage="detect") > 0
    detector = client.get("/v1/model").json()["detector"]
    assert detector["layout"] == "yolox" and detector["input_size"] == list(SCENE_INPUT_HW)
    assert detector["score_threshold"] == pytest.approx(0.3) and detector["card_found"] is True


def test_hostile_inputs_are_still_4xx_with_a_detector(client):
    assert_error(post(client, b"not an image"), 400, "corrupt_image")
    assert_error(post(client, b""), 400, "empty_image")
    assert_error(post(client, jpeg_bytes(*IMAGE_WH), boxes="[[0, 0, -1, 5]]"), 422, "invalid_boxes")
    assert client.get("/readyz").status_code == 200


def test_without_a_detector_nothing_changes(tiny_onnx):
    with TestClient(create_app(Settings(model_path=tiny_onnx, provider="cpu"))) as plain:
        body = post(plain, jpeg_bytes(*IMAGE_WH)).json()
        assert [p["box"] for p in body["persons"]] == [[0, 0, *IMAGE_WH]]
        assert "detect" not in body["timings_ms"]
        assert plain.get("/v1/model").json()["detector"] is None


def test_a_dynamic_batch_detector_serves_concurrent_bare_photos(tiny_onnx, tmp_path):
    path, scene = build_scene_detector(tmp_path / "dynamic.onnx", IMAGE_WH, batch=None)
    # each bare photo reserves the detector's most crops (max_boxes 100) until its people are found: with a
    # detector, the default crop limit leaves room for 4 of them (2 with flip), so concurrent photos are served
    app = create_app(Settings(model_path=tiny_onnx, detector_path=path, provider="cpu"))
    with TestClient(app) as dynamic, concurrent.futures.ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda _: post(dynamic, jpeg_bytes(*IMAGE_WH)).json(), range(8)))
    assert all(len(b["persons"]) == len(scene.persons) for b in bodies)


def test_a_missing_or_broken_detector_stops_start_up_with_one_line(tiny_onnx, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    for path in (tmp_path / "missing.onnx", broken):
        done = subprocess.run([sys.executable, "-m", "service", "--model", str(tiny_onnx), "--detector", str(path),
                               "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and str(path) in lines[0], done.stderr
