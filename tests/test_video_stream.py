"""WS /v1/pose/stream in-process: one JSON message per binary frame, track IDs kept per connection, the oldest
waiting frame dropped (and counted) when a client sends faster than it is served, bad frames answered with an
error while the stream goes on, and the API key rules of every other route."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.main import create_app
from service.settings import Settings
from tests.detector_model import build_scene_detector
from tests.helpers import ROOT, png_bytes
from tests.video_helpers import figure_frames

TINY = ROOT / "tests/models/tiny_coco_mini_128x96.onnx"
WH = (160, 120)
KEY = {"x-api-key": "secret"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    path, _ = build_scene_detector(tmp_path_factory.mktemp("detector") / "scene.onnx", WH)
    settings = Settings(model_path=TINY, detector_path=path, provider="cpu", api_keys="secret",
                        max_concurrent_videos=1)
    with TestClient(create_app(settings)) as client:
        yield client


def test_each_frame_gets_one_answer_with_stable_track_ids(client):
    frames = [png_bytes(f) for f in figure_frames(4, *WH, people=2)]
    with client.websocket_connect("/v1/pose/stream?smooth=false", headers=KEY) as ws:
        answers = []
        for data in frames:  # one at a time: nothing waits, nothing is dropped
            ws.send_bytes(data)
            answers.append(json.loads(ws.receive_text()))
    assert [a["frame"] for a in answers] == [0, 1, 2, 3] and all(a["dropped"] == 0 for a in answers)
    assert all(sorted(p["track_id"] for p in a["persons"]) == [1, 2] for a in answers)
    # the same keypoints as /v1/pose on that image (smooth=false)
    image = client.post("/v1/pose", files={"image": ("f.png", frames[2], "image/png")}, headers=KEY).json()
    assert [p["coco_keypoints"] for p in answers[2]["persons"]] == [p["coco_keypoints"] for p in image["persons"]]
    # state is per connection: a new one starts its IDs over
    with client.websocket_connect("/v1/pose/stream", headers=KEY) as ws:
        ws.send_bytes(frames[0])
        assert sorted(p["track_id"] for p in json.loads(ws.receive_text())["persons"]) == [1, 2]


def test_a_client_sending_faster_than_served_gets_old_frames_dropped_and_counted(client):
    data = png_bytes(figure_frames(1, *WH)[0])
    sent = 30
    with client.websocket_connect("/v1/pose/stream", headers=KEY) as ws:
        for _ in range(sent):
            ws.send_bytes(data)
        answers = []
        while not answers or answers[-1]["frame"] != sent - 1:  # the newest frame is never the one dropped
            answers.append(json.loads(ws.receive_text()))
    last = answers[-1]
    assert last["dropped"] > 0 and len(answers) + last["dropped"] == sent
    assert [a["frame"] for a in answers] == sorted(a["frame"] for a in answers)
    assert 'pose_video_dropped_frames_total' in client.get("/metrics", headers=KEY).text


def test_bad_frames_are_answered_with_an_error_and_the_stream_goes_on(client):
    good = png_bytes(figure_frames(1, *WH)[0])
    with client.websocket_connect("/v1/pose/stream", headers=KEY) as ws:
        ws.send_bytes(b"not an image")
        assert json.loads(ws.receive_text())["error"]["code"] == "corrupt_image"
        ws.send_text("hello")
        assert json.loads(ws.receive_text())["error"]["code"] == "invalid_request"
        ws.send_bytes(good)
        answer = json.loads(ws.receive_text())
        assert answer["frame"] == 2 and len(answer["persons"]) == 2


def test_the_api_key_and_the_stream_limit_are_enforced_at_the_handshake(client):
    for headers in ({}, {"x-api-key": "wrong"}):
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/v1/pose/stream",
                                                                                   headers=headers):
            pass
        assert refused.value.code == 1008
    with client.websocket_connect("/v1/pose/stream", headers={"authorization": "Bearer secret"}) as first:
        with pytest.raises(WebSocketDisconnect) as busy, client.websocket_connect("/v1/pose/stream", headers=KEY):
            pass
        assert busy.value.code == 1013  # POSE_MAX_CONCURRENT_VIDEOS=1: try again later
        first.send_bytes(png_bytes(figure_frames(1, *WH)[0]))
        assert "persons" in json.loads(first.receive_text())
    for query in ("fps=-1", "decode=sharpest"):
        with pytest.raises(WebSocketDisconnect) as bad, client.websocket_connect(f"/v1/pose/stream?{query}",
                                                                                 headers=KEY):
            pass
        assert bad.value.code == 1008
