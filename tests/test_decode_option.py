"""The `decode` request option and the card's `codec` end to end: /v1 (single, render, batch), /v2 parameters, the
client, the batcher pooling crops of different pipelines, and start-up refusing an unknown codec."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pose_client import PoseClient, PoseOptions

from posecore.backend import OrtBackend
from posecore.codec import PoseCodec
from posecore.errors import ModelLoadError
from posecore.imaging import decode_image
from posecore.modelcard import ModelCard, card_path_for, read_card
from service.main import create_app
from service.settings import Settings
from tests.helpers import assert_error, jpeg_bytes

BOXES = [[10, 20, 60, 120], [80, 40, 50, 100, 0.5]]


def _with_codec(tiny_onnx: Path, folder: Path, codec: dict | None) -> Path:
    path = folder / "coded.onnx"
    shutil.copy(tiny_onnx, path)
    card = json.loads(card_path_for(tiny_onnx).read_text())
    card_path_for(path).write_text(json.dumps({**card, "codec": codec}))
    return path


@pytest.fixture(scope="module")
def client(tiny_onnx):
    with TestClient(create_app(Settings(model_path=tiny_onnx, max_batch_items=8, max_boxes=5))) as client:
        yield client


@pytest.fixture(scope="module")
def udp_model(tiny_onnx, tmp_path_factory):
    return _with_codec(tiny_onnx, tmp_path_factory.mktemp("udp"), {"type": "UDPHeatmap", "blur_kernel_size": 11})


def _expected(model: Path, data: bytes, boxes, decode: str | None, flip: bool = True) -> list[list[float]]:
    """What the pose codec computes in this process, for comparison with what the service answers."""
    backend = OrtBackend(model, provider="cpu")
    card, _ = read_card(model, backend)
    codec = PoseCodec(card)
    rows = np.array([[*b[:4], b[4] if len(b) > 4 else 1.0] for b in boxes], dtype=np.float64)
    prepared = codec.crops(decode_image(data, 10**8, 10**8), rows, flip, decode)
    return [p.keypoints.reshape(-1).tolist() for p in codec.persons(prepared, backend.infer(prepared.inputs))]


def _post(client, data: bytes, **form):
    return client.post("/v1/pose", files={"image": ("p.jpg", data, "image/jpeg")}, data=form)


@pytest.mark.parametrize("decode", [None, "official", "msra", "dark", "udp"])
def test_v1_runs_the_requested_pipeline_and_says_which(client, tiny_onnx, decode):
    data = jpeg_bytes(seed=5)
    form = {"boxes": json.dumps(BOXES), "flip": "true", **({"decode": decode} if decode else {})}
    response = _post(client, data, **form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decode"] == (decode or "official")  # a card without codec: the official pipeline
    got = [p["coco_keypoints"] for p in body["persons"]]
    np.testing.assert_allclose(got, _expected(tiny_onnx, data, BOXES, decode), rtol=0, atol=1e-4)


def test_pipelines_really_differ(client):
    data = jpeg_bytes(seed=6)
    answers = {d: _post(client, data, boxes=json.dumps(BOXES), decode=d).json()["persons"][0]["coco_keypoints"]
               for d in ("official", "dark", "udp")}
    assert answers["official"] != answers["dark"] and answers["official"] != answers["udp"]


def test_an_unknown_decoding_is_a_400(client):
    assert_error(_post(client, jpeg_bytes(), decode="simcc"), 400, "invalid_request")


def test_the_model_says_its_default_and_what_it_allows(client):
    body = client.get("/v1/model").json()
    assert body["decode_default"] == "official" and body["decode_allowed"] == ["official", "msra", "dark", "udp"]
    assert body["card"]["codec"] is None


def test_render_says_which_decoding_ran(client):
    response = client.post("/v1/pose/render", files={"image": ("p.jpg", jpeg_bytes(), "image/jpeg")},
                           data={"decode": "dark"})
    assert response.status_code == 200 and response.headers["x-pose-decode"] == "dark"


def test_batch_items_choose_their_own_decoding_over_the_call_level_one(client):
    data = jpeg_bytes(seed=7)
    encoded = base64.b64encode(data).decode()
    items = [{"image_base64": encoded, "boxes": BOXES, "decode": d} for d in ("official", "dark", "udp", None)]
    response = client.post("/v1/pose/batch", json={"items": items, "decode": "msra"})
    assert response.status_code == 200, response.text
    results = [r["result"] for r in response.json()["results"]]
    assert [r["decode"] for r in results] == ["official", "dark", "udp", "msra"]  # null: the call's
    bad = client.post("/v1/pose/batch", json={"items": [{"image_base64": encoded, "decode": "x"}]})
    assert_error(bad, 400, "invalid_request")


def _crop_heatmaps(batch: np.ndarray) -> np.ndarray:
    """A stand-in network: each crop's own heatmaps (4x4 block means of its channels, shifted per joint), so that
    an answer depends on its crop alone, whatever else shares the batch."""
    n, _, h, w = batch.shape
    blocks = batch.reshape(n, 3, h // 4, 4, w // 4, 4).mean(axis=(3, 5))
    return np.stack([np.roll(blocks[:, j % 3], j, axis=2) for j in range(17)], axis=1).astype(np.float32)


def test_the_batcher_pools_crops_of_every_pipeline_and_each_answer_stays_its_own():
    import asyncio

    from service.admission import PixelBudget
    from service.batching import MicroBatcher
    from service.metrics import Metrics
    from service.request import RequestDefaults, build_request
    from service.serving import Limits, PoseService

    sizes: list[int] = []

    def infer(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        return _crop_heatmaps(batch)

    card = ModelCard.official_defaults("stand-in", (128, 96), (32, 24))
    batcher = MicroBatcher(infer=infer, max_batch_size=64, max_wait_s=0.2, max_queue_items=256)
    batcher.start()
    poser = PoseService(codec=PoseCodec(card), batcher=batcher, metrics=Metrics(), limits=Limits(10**8, 10**8),
                        pixels=PixelBudget(10**8), request_timeout_s=30)
    defaults = RequestDefaults(flip=True, max_boxes=10)
    data = jpeg_bytes(seed=10)
    decodes = ("official", "msra", "dark", "udp")
    requests = [build_request(data, {"boxes": BOXES, "decode": d}, defaults) for d in decodes]
    try:
        pooled = asyncio.run(poser.estimate_many(requests, concurrency=4))
        assert max(sizes) > 4  # crops of several requests (4 each: 2 boxes, flipped) shared a batch
        sizes.clear()
        alone = [asyncio.run(poser.estimate(r)) for r in requests]
        assert max(sizes) == 4
    finally:
        batcher.close()
        poser.close()
    for together, single, decode in zip(pooled, alone, decodes, strict=True):
        assert not isinstance(together, Exception) and together.decode == single.decode == decode
        for a, b in zip(together.persons, single.persons, strict=True):
            np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert not np.array_equal(alone[0].persons[0].keypoints, alone[3].persons[0].keypoints)


def test_v2_takes_decode_as_a_parameter_and_answers_it(client):
    data = jpeg_bytes(seed=8)
    request = {"parameters": {"decode": "udp"}, "inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()],
         "parameters": {"content_type": "base64"}}]}
    response = client.post(f"/v2/models/{client.get('/v1/model').json()['name']}/infer", json=request)
    assert response.status_code == 200, response.text
    assert response.json()["parameters"] == {"decode": "udp"}


def test_a_udp_trained_model_is_served_with_udp_and_allows_nothing_else(udp_model):
    with TestClient(create_app(Settings(model_path=udp_model, max_boxes=5))) as client:
        model = client.get("/v1/model").json()
        assert (model["decode_default"], model["decode_allowed"]) == ("udp", ["udp"])
        data = jpeg_bytes(seed=9)
        body = _post(client, data, boxes=json.dumps(BOXES), flip="true").json()
        assert body["decode"] == "udp"
        np.testing.assert_allclose([p["coco_keypoints"] for p in body["persons"]],
                                   _expected(udp_model, data, BOXES, None), rtol=0, atol=1e-4)
        refused = _post(client, data, boxes=json.dumps(BOXES), decode="dark")
        assert_error(refused, 400, "invalid_request")
        assert "udp" in refused.json()["error"]["message"]


@pytest.mark.parametrize("codec, where", [({"type": "SimCCLabel"}, "codec.type"),
                                          ({"type": "MSRAHeatmap", "sigma": 2}, "codec.sigma"),
                                          ({"type": "UDPHeatmap", "unbiased": True}, "codec"),
                                          ({"type": "MSRAHeatmap", "blur_kernel_size": 10}, "codec")])
def test_an_unknown_codec_or_option_stops_start_up_in_one_line(tiny_onnx, tmp_path, codec, where):
    model = _with_codec(tiny_onnx, tmp_path, codec)
    with pytest.raises(ModelLoadError) as refused:
        read_card(model, OrtBackend(model, provider="cpu"))
    message = str(refused.value)
    assert "\n" not in message and f"{where}:" in message, message
    with pytest.raises(ModelLoadError), TestClient(create_app(Settings(model_path=model))):
        pass


def test_a_card_written_with_a_codec_reads_back(tmp_path, tiny_onnx):
    model = _with_codec(tiny_onnx, tmp_path, {"type": "MSRAHeatmap", "unbiased": True, "blur_kernel_size": 11})
    card = ModelCard.read(card_path_for(model))
    card.write(tmp_path / "again.json")
    assert ModelCard.read(tmp_path / "again.json").codec == card.codec


def test_the_client_sends_decode_and_reads_which_ran() -> None:
    sent: list[bytes] = []
    answer = {"image": {"width": 1, "height": 1}, "model": {"name": "m", "arch": "a", "trained": True,
                                                            "provider": "cpu"},
              "flip": True, "decode": "dark", "persons": [], "timings_ms": {}}

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request.read())
        return httpx.Response(200, json=answer)

    with PoseClient("http://fake", transport=httpx.MockTransport(record)) as client:
        assert client.pose(b"jpeg").decode == "dark"
        client.pose(b"jpeg", options=PoseOptions(decode="dark"))
    with pytest.raises(ValueError, match="decode"):
        PoseOptions(decode="fancy")
    plain, chosen = sent
    assert b'name="decode"' not in plain
    assert re.search(rb'name="decode"\r\n\r\ndark\r\n', chosen)
