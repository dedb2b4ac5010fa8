"""The Open Inference Protocol v2 front door, driven by the real clients from PyPI (tritonclient[http], KServe's
InferenceRESTClient) against a live server on 127.0.0.1, compared with /v1/pose, and its refusals in the protocol's
form (the protocol layer's pure parts: tests/test_oip_protocol.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from posecore.backend import ProviderStatus
from service.main import create_app, load_model
from service.settings import Settings
from tests.helpers import ROOT, jpeg_bytes, metric_value
from tests.live_server import LiveServer

tritonhttp = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (the dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402  (after the importorskip)

PHOTO = (ROOT / "examples" / "000000000785.jpg").read_bytes()  # COCO val2017, CC BY 2.0; 640x425
BOXES = np.array([[277.1183, 45.6997, 225.0913, 333.5603, 0.98], [20.5, 30.25, 120.125, 220.75, 0.5]], np.float32)
MODEL = "tiny"
JSON_VALUES = 10_000  # the bound on a request header's JSON values (the service derives its own from settings)
KEY = "oip-test-key"


@pytest.fixture(scope="module")
def server(tiny_onnx: Path) -> Iterator[LiveServer]:
    with LiveServer(tiny_onnx, env={"POSE_SHUTDOWN_DELAY_S": "0", "POSE_MAX_BATCH_ITEMS": "4"}) as live:
        yield live


@pytest.fixture(scope="module")
def triton(server: LiveServer) -> Iterator[tritonhttp.InferenceServerClient]:
    client = tritonhttp.InferenceServerClient(server.base_url.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


def image_input(*images: bytes, binary: bool = True) -> tritonhttp.InferInput:
    tensor = tritonhttp.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(list(images), dtype=object), binary_data=binary)
    return tensor


def array_input(name: str, array: np.ndarray, datatype: str) -> tritonhttp.InferInput:
    tensor = tritonhttp.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def v1_keypoints(base_url: str, image: bytes, boxes: np.ndarray, flip: bool, box_format: str = "xywh") -> np.ndarray:
    """/v1/pose's keypoints for the same boxes: the FP32 tensor's values, exactly, as JSON numbers."""
    response = httpx.post(f"{base_url}/v1/pose", files={"image": ("p.jpg", image, "image/jpeg")}, timeout=120,
                          data={"boxes": json.dumps(boxes.astype(np.float64).tolist()), "flip": str(flip).lower(),
                                "box_format": box_format})
    assert response.status_code == 200, response.text
    persons = response.json()["persons"]
    return np.array([[[k["x"], k["y"], k["score"]] for k in p["keypoints"]] for p in persons], np.float64)


# -- tritonclient ----------------------------------------------------------------------------------------------
@pytest.mark.integration  # a live server process
def test_health_and_metadata_through_tritonclient(triton: tritonhttp.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, "1")
    assert not triton.is_model_ready("resnet50") and not triton.is_model_ready(MODEL, "2")
    server = triton.get_server_metadata()
    assert server["name"] == "hrnet-pose" and "binary_tensor_data" in server["extensions"]
    metadata = triton.get_model_metadata(MODEL)
    assert metadata == triton.get_model_metadata(MODEL, "1")
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("image", "BYTES", [-1]), ("boxes", "FP32", [-1, -1]), ("box_image_index", "INT32", [-1])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("keypoints", "FP32", [-1, 17, 3]), ("boxes", "FP32", [-1, 4]), ("scores", "FP32", [-1]),
        ("image_index", "INT32", [-1])]
    config = triton.get_model_config(MODEL)
    assert config["max_batch_size"] == 0 and config["name"] == MODEL
    assert [(t["name"], t["data_type"], t["dims"], t.get("optional", False)) for t in config["input"]] == [
        ("image", "TYPE_STRING", [-1], False), ("boxes", "TYPE_FP32", [-1, -1], True),
        ("box_image_index", "TYPE_INT32", [-1], True)]
    with pytest.raises(InferenceServerException) as unknown:
        triton.get_model_metadata("resnet50")
    assert unknown.value.status() == "404" and unknown.value.message().startswith("not_found: ")


@pytest.mark.integration  # a live server process
@pytest.mark.parametrize("flip", [False, True])
def test_infer_a_jpeg_with_boxes_equals_v1(server: LiveServer, triton: tritonhttp.InferenceServerClient,
                                           flip: bool) -> None:
    result = triton.infer(MODEL, [image_input(PHOTO), array_input("boxes", BOXES, "FP32")],
                          parameters={"flip": flip})  # no outputs named: tritonclient asks for binary outputs
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 2 * 17 * 3 * 4
    keypoints = result.as_numpy("keypoints")
    assert keypoints.dtype == np.float32 and keypoints.shape == (2, 17, 3)
    expected = v1_keypoints(server.base_url, PHOTO, BOXES, flip)
    # /v1 got the FP32 boxes' exact values; v2 only rounds its answer to float32
    np.testing.assert_allclose(keypoints, expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(result.as_numpy("boxes"), BOXES[:, :4])
    np.testing.assert_array_equal(result.as_numpy("image_index"), [0, 0])
    assert result.as_numpy("scores").shape == (2,) and result.as_numpy("scores").dtype == np.float32


@pytest.mark.integration  # a live server process
def test_flip_changes_the_answer(triton: tritonhttp.InferenceServerClient) -> None:
    plain = triton.infer(MODEL, [image_input(PHOTO), array_input("boxes", BOXES, "FP32")])
    flipped = triton.infer(MODEL, [image_input(PHOTO), array_input("boxes", BOXES, "FP32")],
                           parameters={"flip": True})
    assert not np.array_equal(plain.as_numpy("keypoints"), flipped.as_numpy("keypoints"))


@pytest.mark.integration  # a live server process
def test_several_images_json_outputs_and_xyxy(server: LiveServer, triton: tritonhttp.InferenceServerClient) -> None:
    second = jpeg_bytes(200, 300, seed=4)
    xyxy = np.array([[300, 50, 480, 380], [10, 20, 110, 220], [30, 40, 150, 280]], np.float32)
    outputs = [tritonhttp.InferRequestedOutput("image_index", binary_data=False),
               tritonhttp.InferRequestedOutput("keypoints", binary_data=False)]
    result = triton.infer(MODEL, [image_input(PHOTO, second), array_input("boxes", xyxy, "FP32"),
                                  array_input("box_image_index", np.array([0, 1, 1], np.int32), "INT32")],
                          outputs=outputs, parameters={"box_format": "xyxy"})
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["image_index", "keypoints"]  # as asked, in JSON
    assert all("data" in o for o in response["outputs"])
    np.testing.assert_array_equal(result.as_numpy("image_index"), [0, 1, 1])
    keypoints = result.as_numpy("keypoints")
    np.testing.assert_allclose(keypoints[:1], v1_keypoints(server.base_url, PHOTO, xyxy[:1], False, "xyxy"),
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(keypoints[1:], v1_keypoints(server.base_url, second, xyxy[1:], False, "xyxy"),
                               rtol=1e-6, atol=1e-4)


@pytest.mark.integration  # a live server process
def test_no_boxes_is_the_whole_image_and_empty_boxes_is_nobody(triton: tritonhttp.InferenceServerClient) -> None:
    whole = triton.infer(MODEL, [image_input(PHOTO)])
    np.testing.assert_array_equal(whole.as_numpy("boxes"), [[0, 0, 640, 425]])
    nobody = triton.infer(MODEL, [image_input(PHOTO), array_input("boxes", np.zeros((0, 4), np.float32), "FP32")])
    assert nobody.as_numpy("keypoints").shape == (0, 17, 3) and nobody.as_numpy("image_index").shape == (0,)


@pytest.mark.parametrize(("inputs", "parameters", "status", "code"), [
    (lambda: [image_input(b"not an image")], None, "400", "corrupt_image"),
    (lambda: [image_input(PHOTO), array_input("boxes", np.array([[1, 2, -3, 4]], np.float32), "FP32")], None,
     "422", "invalid_boxes"),
    (lambda: [image_input(PHOTO), array_input("boxes", np.ones((2, 3), np.float32), "FP32")], None,
     "422", "invalid_boxes"),
    (lambda: [image_input(PHOTO, PHOTO), array_input("boxes", BOXES, "FP32")], None, "400", "invalid_request"),
    (lambda: [image_input(PHOTO), array_input("boxes", BOXES.astype(np.int32), "INT32")], None, "400",
     "invalid_request"),
    (lambda: [image_input(*[PHOTO] * 5)], None, "422", "too_many_items"),
    (lambda: [image_input(PHOTO), array_input("mask", np.ones(3, np.float32), "FP32")], None, "400",
     "invalid_request"),
    (lambda: [array_input("boxes", BOXES, "FP32")], None, "400", "invalid_request"),
    (lambda: [image_input(PHOTO)], {"flip": "yes"}, "400", "invalid_request"),
    (lambda: [image_input(PHOTO)], {"box_format": "cxcywh"}, "400", "invalid_request"),
], ids=["corrupt image", "negative width", "three columns", "two images no index", "int boxes", "five images",
        "unknown input", "no image", "flip not bool", "bad box_format"])
@pytest.mark.integration  # a live server process
def test_bad_inputs_are_4xx_through_tritonclient(triton: tritonhttp.InferenceServerClient, inputs, parameters,
                                                 status: str, code: str) -> None:
    with pytest.raises(InferenceServerException) as refused:
        triton.infer(MODEL, inputs(), parameters=parameters)
    assert refused.value.status() == status
    assert refused.value.message().startswith(f"{code}: "), refused.value.message()


@pytest.mark.integration  # a live server process
@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests(server: LiveServer, compression: str) -> None:
    client = tritonhttp.InferenceServerClient(server.base_url.removeprefix("http://"), network_timeout=120)
    try:
        plain = client.infer(MODEL, [image_input(PHOTO), array_input("boxes", BOXES, "FP32")])
        packed = client.infer(MODEL, [image_input(PHOTO), array_input("boxes", BOXES, "FP32")],
                              request_compression_algorithm=compression, response_compression_algorithm=compression)
    finally:
        client.close()
    np.testing.assert_array_equal(packed.as_numpy("keypoints"), plain.as_numpy("keypoints"))


@pytest.mark.integration  # a live server process
def test_bad_image_of_several_is_named(triton: tritonhttp.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as refused:
        triton.infer(MODEL, [image_input(PHOTO, b"\xff\xd8 broken")])
    assert refused.value.status() == "400" and refused.value.message().startswith("corrupt_image: image 1: ")


@pytest.mark.integration  # a live server process
def test_raw_json_form_with_base64_and_the_endpoint_label(server: LiveServer) -> None:
    request = {"id": "call-7", "parameters": {"flip": False},
               "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"content_type": "base64"},
                           "data": [base64.b64encode(PHOTO).decode()]},
                          {"name": "boxes", "shape": [2, 5], "datatype": "FP32", "data": BOXES.tolist()}]}
    response = httpx.post(f"{server.base_url}/v2/models/{MODEL}/versions/1/infer", json=request, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json" and re.fullmatch(r"[0-9a-f]{32}",
                                                                                   response.headers["x-request-id"])
    body = response.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("call-7", MODEL, "1")
    keypoints = next(o for o in body["outputs"] if o["name"] == "keypoints")
    assert keypoints["shape"] == [2, 17, 3]
    np.testing.assert_allclose(np.array(keypoints["data"]).reshape(2, 17, 3),
                               v1_keypoints(server.base_url, PHOTO, BOXES, False), rtol=1e-6, atol=1e-4)
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert metric_value(metrics, "pose_requests_total", status="200",
                        endpoint="/v2/models/{model_name}/versions/{model_version}/infer") > 0


# -- KServe's client ---------------------------------------------------------------------------------------------
@pytest.mark.integration  # a live server process
def test_kserve_rest_client_health_and_infer(server: LiveServer) -> None:
    kserve = pytest.importorskip("kserve", reason="kserve is not installed (pip install -e '.[dev]')")

    async def run() -> tuple[bool, bool, bool, bool, np.ndarray]:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=120))
        try:
            image = kserve.InferInput("image", [1], "BYTES")
            image.set_data_from_numpy(np.array([PHOTO], dtype=object), binary_data=True)
            boxes = kserve.InferInput("boxes", list(BOXES.shape), "FP32")
            boxes.set_data_from_numpy(BOXES, binary_data=True)
            request = kserve.InferRequest(model_name=MODEL, infer_inputs=[image, boxes], request_id="k-1")
            answer = await client.infer(server.base_url, request, model_name=MODEL)
            keypoints = next(o for o in answer.outputs if o.name == "keypoints").as_numpy()
            return (await client.is_server_live(server.base_url), await client.is_server_ready(server.base_url),
                    await client.is_model_ready(server.base_url, MODEL),
                    await client.is_model_ready(server.base_url, "resnet50"), keypoints)
        finally:
            await client.close()

    live, ready, model_ready, other_ready, keypoints = asyncio.run(run())
    assert (live, ready, model_ready, other_ready) == (True, True, True, False)
    np.testing.assert_allclose(keypoints, v1_keypoints(server.base_url, PHOTO, BOXES, False), rtol=1e-6, atol=1e-4)
    # KServe's client has no model-metadata call: the v2 metadata document, read plainly
    metadata = httpx.get(f"{server.base_url}/v2/models/{MODEL}").json()
    assert metadata["platform"] and {t["name"] for t in metadata["inputs"]} == {"image", "boxes", "box_image_index"}


# -- refusals in the protocol's form, in process -------------------------------------------------------------------
@pytest.mark.integration  # a live server process
def test_keys_not_ready_and_unknown_routes_answer_in_the_protocol_form(tiny_onnx: Path) -> None:
    settings = Settings(model_path=tiny_onnx, api_keys=KEY, intra_op_threads=1, max_body_bytes=100_000)
    with TestClient(create_app(settings)) as client:
        # the health probes stay open, as /livez and /readyz do (POSE_AUTH_PROBES closes them)
        assert client.get("/v2/health/live").status_code == 200 and client.get("/v2/health/ready").status_code == 200
        refused = client.get(f"/v2/models/{MODEL}")
        assert refused.status_code == 401 and refused.json() == {"error": refused.json()["error"]}
        assert refused.json()["error"].startswith("unauthorized: ")
        assert client.get(f"/v2/models/{MODEL}", headers={"X-API-Key": KEY}).status_code == 200
        missing = client.get("/v2/repository/index", headers={"X-API-Key": KEY})
        assert missing.status_code == 404 and missing.json()["error"].startswith("not_found: ")
        too_big = client.post(f"/v2/models/{MODEL}/infer", content=b"{" + b" " * 200_000 + b"}",
                              headers={"X-API-Key": KEY})
        assert too_big.status_code == 413 and too_big.json()["error"].startswith("payload_too_large: ")
        v1 = client.get("/v1/model")  # /v1 keeps its own form
        assert v1.status_code == 401 and v1.json()["error"]["code"] == "unauthorized"

    settings = Settings(model_path=tiny_onnx, intra_op_threads=1)
    loaded = load_model(settings)
    loaded.provider_status = ProviderStatus("cuda", "CPUExecutionProvider", ok=False, reason="CUDA did not load")
    with TestClient(create_app(settings, model=loaded)) as client:
        for response in (client.get("/v2/health/ready"), client.get(f"/v2/models/{MODEL}/ready"),
                         client.post(f"/v2/models/{MODEL}/infer", json={"inputs": []})):
            assert response.status_code == 503 and response.headers["retry-after"] == "5"
            assert response.json()["error"].startswith("not_ready: ")
        assert client.get("/v2/health/live").json() == {"live": True}


@pytest.mark.integration  # a live server process
def test_overload_is_429_with_retry_after(tiny_onnx: Path) -> None:
    """One crop admitted at a time: concurrent infer calls are shed in the protocol's form, with Retry-After."""
    body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters":
                                   {"content_type": "base64"}, "data": [base64.b64encode(PHOTO).decode()]}]})

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(url, content=body) for _ in range(12)))

    with LiveServer(tiny_onnx, env={"POSE_MAX_QUEUE_CROPS": "1", "POSE_SHUTDOWN_DELAY_S": "0"}) as live:
        responses = asyncio.run(burst(f"{live.base_url}/v2/models/{MODEL}/infer"))
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}, statuses
    shed = next(r for r in responses if r.status_code == 429)
    assert int(shed.headers["retry-after"]) >= 1 and shed.json()["error"].startswith("overloaded: ")
