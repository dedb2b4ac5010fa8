"""The third hostile round (issue 18), server side: each test replays an attack as it was found and checks the fix.

Huge JSON from a small body, calls that keep working after they failed or past their deadline, admission that
reserved nothing, and the minor protocol findings. The fakes are tests/fakes.py's.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
import threading
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

import service.serving
from posecore.errors import PoseError
from service.batching import MicroBatcher
from service.json_limits import MAX_JSON_DEPTH, check_json_shape, json_value_limit
from service.oip.encoding import inflate
from service.oip.tensors import header_length
from service.request import PoseRequest
from service.serving import DetectorStage, crops_at_most
from tests.fakes import GatedBackend, app_with
from tests.helpers import assert_error, jpeg_bytes, person_boxes, v2_image_input

INFER = "/v2/models/fake/infer"  # the fakes' card name


def v2_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert message.startswith(code + ":"), message
    return message


def boxes_input(per_image: list[int]) -> list[dict]:
    rows = [box for n in per_image for box in person_boxes(n)]
    index = [i for i, n in enumerate(per_image) for _ in range(n)]
    return [{"name": "boxes", "shape": [len(rows), 4], "datatype": "FP32", "data": rows},
            {"name": "box_image_index", "shape": [len(rows)], "datatype": "INT32", "data": index}]


def settled(client: TestClient) -> None:
    """Every reservation of the calls before was returned, in one place, whatever happened to them."""
    poser = client.app.state.service.poser
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (poser.pixels.held or poser.batcher.reserved_items
                                           or poser.batcher.inflight_items):
        time.sleep(0.02)  # a worker the deadline gave up on returns its pixels when it finishes
    assert (poser.pixels.held, poser.batcher.reserved_items, poser.batcher.inflight_items) == (0, 0, 0)


# ---- 1. huge JSON from a small request --------------------------------------------------------------------------
def test_a_gzip_v2_body_of_millions_of_empty_lists_is_refused_before_parsing():
    """The attack: 195 KB of gzip inflating to 64 MB of `[],` inside parameters took the server to 1.9 GB and
    stalled /livez 9.4 s, then answered 200. Here 8 MB of it (2.7 M lists)."""
    junk = b"[]," * 2_700_000
    document = b'{"inputs": [' + json.dumps(v2_image_input(jpeg_bytes())).encode() + b'], "parameters": {"x": [' \
        + junk + b'[]]}}'
    body = gzip.compress(document)
    assert len(body) < 100_000
    with TestClient(app_with(GatedBackend())) as client:
        response = client.post(INFER, content=body, headers={"content-type": "application/json",
                                                             "content-encoding": "gzip"})
        v2_error(response, 413, "json_too_complex")


def test_a_batch_body_of_millions_of_empty_lists_is_refused_before_parsing():
    image = base64.b64encode(jpeg_bytes()).decode()
    body = b'{"items": [{"image_base64": "' + image.encode() + b'", "boxes": [' + b"[]," * 2_000_000 + b'[]]}]}'
    with TestClient(app_with(GatedBackend())) as client:
        response = client.post("/v1/pose/batch", content=body, headers={"content-type": "application/json"})
        assert_error(response, 413, "json_too_complex")


def test_deep_nesting_is_refused():
    nested = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    document = b'{"inputs": [' + json.dumps(v2_image_input(jpeg_bytes())).encode() + b'], "parameters": {"x": ' \
        + nested + b"}}"
    with TestClient(app_with(GatedBackend())) as client:
        response = client.post(INFER, content=document, headers={"content-type": "application/json"})
        v2_error(response, 413, "json_too_complex")


def test_the_json_bound_counts_structure_not_strings():
    limit = json_value_limit(32, 100)
    valid = json.dumps({"items": [{"image_base64": "a,[{" * 50_000, "boxes": person_boxes(100)} for _ in range(32)]})
    check_json_shape(valid.encode(), limit)  # the largest valid batch, commas and brackets inside its strings
    with pytest.raises(PoseError) as refused:
        check_json_shape(b"[" + b"1," * limit + b"1]", limit)
    assert refused.value.code == "json_too_complex"
    with pytest.raises(PoseError) as unterminated:
        check_json_shape(b'["a", "' + b'\\"' * 5 + b"[" * 40, 10)
    assert unterminated.value.code == "invalid_json"
    for escapes in (b'\\"' * 100_000, b"\\" * 100_000):  # each escaped quote is rescanned; so is a long run
        with pytest.raises(PoseError) as refused:
            check_json_shape(b'{"id": "' + escapes + b'"}', limit)
        assert refused.value.code == "json_too_complex"


def test_the_image_count_is_refused_from_the_shape_before_the_bytes_are_split():
    """16.7 M zero-length BYTES elements gzipped to 63 KB: 422 only after a 5.9 s stall. Here 8 M (32 MB)."""
    count = 8_000_000
    head = json.dumps({"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 4 * count}}]}).encode()
    body = zlib.compress(head + bytes(4 * count))
    with TestClient(app_with(GatedBackend(), max_body_bytes=64 * 2**20)) as client:
        started = time.perf_counter()
        response = client.post(INFER, content=body, headers={
            "content-type": "application/octet-stream", "content-encoding": "deflate",
            "inference-header-content-length": str(len(head))})
        elapsed = time.perf_counter() - started
        v2_error(response, 422, "too_many_items")
        assert elapsed < 2.0, f"{elapsed:.1f} s: the elements were split before the shape was checked"


# ---- 2. a call's whole validation happens before any crop ---------------------------------------------------------
def test_a_v2_call_with_a_corrupt_image_computes_nothing():
    """Image 0 corrupt, images 1-3 with 20 boxes each and flip: 400, and not one crop computed."""
    backend = GatedBackend()
    images = [b"\xff\xd8\xff" + b"corrupt" * 10] + [jpeg_bytes()] * 3
    request = {"inputs": [v2_image_input(*images), *boxes_input([0, 20, 20, 20])], "parameters": {"flip": True}}
    with TestClient(app_with(backend)) as client:
        message = v2_error(client.post(INFER, json=request), 400, "corrupt_image")
        assert "image 0" in message
        assert backend.computed == 0
        settled(client)


def test_a_v2_call_with_a_box_outside_its_image_computes_nothing():
    backend = GatedBackend()
    request = {"inputs": [v2_image_input(jpeg_bytes(), jpeg_bytes()), *boxes_input([20, 1])]}
    request["inputs"][1]["data"][-1] = [5000.0, 5000.0, 10.0, 10.0]  # image 1's box, outside its 160x240
    with TestClient(app_with(backend)) as client:
        message = v2_error(client.post(INFER, json=request), 422, "invalid_boxes")
        assert "image 1" in message
        assert backend.computed == 0


def test_an_unknown_output_name_computes_nothing():
    backend = GatedBackend()
    request = {"inputs": [v2_image_input(jpeg_bytes()), *boxes_input([20])], "outputs": [{"name": "heatmaps"}]}
    with TestClient(app_with(backend)) as client:
        v2_error(client.post(INFER, json=request), 400, "invalid_request")
        assert backend.computed == 0


def test_a_v2_call_stops_at_its_first_failure():
    """Image 0's header is fine but its data are not (found only while decoding): the call fails at once and
    the other images' crops are not computed."""
    backend = GatedBackend()
    good = jpeg_bytes(320, 480)
    truncated = good[: len(good) // 3]
    request = {"inputs": [v2_image_input(truncated, good, good, good), *boxes_input([1, 20, 20, 20])]}
    with TestClient(app_with(backend)) as client:
        v2_error(client.post(INFER, json=request), 400, "corrupt_image")
        assert backend.computed == 0
        settled(client)


# ---- 3. one deadline per call ------------------------------------------------------------------------------------
class SlowBackend(GatedBackend):
    def infer(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(0.25)
        return super().infer(batch)


@pytest.mark.parametrize("door", ["batch", "v2"])
def test_a_call_has_one_deadline_for_all_its_items(door):
    """8 images x 8 boxes, 0.25 s per batch of 8: 2 s of work against a 1 s deadline. Each item used to start its
    own clock (32 items x 10 boxes with flip: 200 after 60.9 s under a 30 s timeout)."""
    timeout = 1.0
    with TestClient(app_with(SlowBackend(), request_timeout_s=timeout, max_batch_size=8)) as client:
        started = time.perf_counter()
        if door == "batch":
            image = base64.b64encode(jpeg_bytes()).decode()
            item = {"image_base64": image, "boxes": person_boxes(8)}
            response = client.post("/v1/pose/batch", json={"items": [item] * 8})
        else:
            response = client.post(INFER, json={"inputs": [v2_image_input(*[jpeg_bytes()] * 8), *boxes_input([8] * 8)]})
        elapsed = time.perf_counter() - started
        assert elapsed < timeout + 0.6, f"answered after {elapsed:.1f} s; the call's deadline is {timeout} s"
        if door == "batch":
            codes = {r["error"]["code"] for r in response.json()["results"] if not r["ok"]}
            assert codes == {"deadline_exceeded"}, response.text
        else:
            v2_error(response, 504, "deadline_exceeded")
        settled(client)


# ---- 4. admission reserves before decoding -----------------------------------------------------------------------
def test_an_announcement_reserves_its_crops():
    batcher = MicroBatcher(infer=lambda batch: batch, max_batch_size=8, max_wait_s=0.0, max_queue_items=64)
    first = batcher.announce(60)  # decoding its image: its 60 crops are already spoken for
    with pytest.raises(PoseError) as refused:
        batcher.announce(10)
    assert refused.value.code == "overloaded"
    first.shrink(50)  # a detector found fewer people than it might have
    batcher.announce(10).release()
    first.release()
    assert batcher.reserved_items == 0


def test_a_second_request_is_refused_while_the_first_decodes_before_it_decodes_anything(monkeypatch):
    """16 concurrent 100-box flip requests used to each decode and crop (1.4-7.3 s) before their 429."""
    decoding, release = threading.Event(), threading.Event()
    decodes = []
    real_decode = service.serving.decode_opened

    def slow_decode(header):
        decodes.append(header)
        decoding.set()
        release.wait(10)
        return real_decode(header)

    monkeypatch.setattr(service.serving, "decode_opened", slow_decode)
    with TestClient(app_with(GatedBackend(), max_queue_crops=64, max_boxes=100)) as client:
        params = {"boxes": json.dumps(person_boxes(50)), "flip": "true"}  # 100 crops
        first = threading.Thread(target=client.post, args=("/v1/pose",),
                                 kwargs={"content": jpeg_bytes(), "params": params,
                                         "headers": {"content-type": "image/jpeg"}})
        first.start()
        try:
            assert decoding.wait(10)
            answer: list = []
            second = threading.Thread(target=lambda: answer.append(client.post(
                "/v1/pose", content=jpeg_bytes(), params={"boxes": json.dumps(person_boxes(2))},
                headers={"content-type": "image/jpeg"})))
            second.start()
            second.join(5)
            assert answer, "the second request waited for the first one's decoding instead of being refused"
            assert_error(answer[0], 429, "overloaded")
            assert len(decodes) == 1, "the refused request decoded its image"
        finally:
            release.set()
            first.join(30)
        settled(client)


def test_a_detector_request_reserves_its_most_crops():
    """A bare photo with a 100-box detector announced 1 crop and could yield 200 (with flip)."""
    detection = DetectorStage(SimpleNamespace(max_boxes=100), MicroBatcher(infer=lambda b: b, max_batch_size=1,
                                                                      max_wait_s=0.0, max_queue_items=64))  # type: ignore[arg-type]
    assert crops_at_most(PoseRequest(b"", None, flip=True), detection) == 200
    assert crops_at_most(PoseRequest(b"", None, flip=False), detection) == 100
    assert crops_at_most(PoseRequest(b"", np.zeros((3, 5)), flip=True), detection) == 6
    assert crops_at_most(PoseRequest(b"", None, flip=False, detect=False), detection) == 1
    assert crops_at_most(PoseRequest(b"", None, flip=True), None) == 2


# ---- 8. Inference-Header-Content-Length -----------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "\u0661\u0662"])
def test_odd_header_lengths_are_400_not_500(value):
    with pytest.raises(PoseError) as refused:
        header_length(value, 10_000)
    assert refused.value.status == 400
    if value.isascii() or value == "\u00b2":  # the attack sent the byte 0xB2, which the server reads as '²'
        with TestClient(app_with(GatedBackend()), raise_server_exceptions=False) as client:
            response = client.post(INFER, content=b"{}", headers={"content-type": "application/octet-stream",
                                                                   "inference-header-content-length":
                                                                       value.encode("latin-1")})
            assert response.status_code == 400, response.text


# ---- 10. the minor findings ---------------------------------------------------------------------------------------
def test_gzip_members_are_all_read_and_junk_after_them_is_refused():
    first, second = b'{"inputs": ', b"[]}"
    assert inflate(gzip.compress(first) + gzip.compress(second), "gzip", 1000) == first + second
    for junk in (b"junk", b"\x00" * 8, zlib.compress(b"x")):
        with pytest.raises(PoseError) as refused:
            inflate(gzip.compress(first + second) + junk, "gzip", 1000)
        assert refused.value.code == "invalid_request"
    with pytest.raises(PoseError):
        inflate(zlib.compress(first) + b"junk", "deflate", 1000)
    with pytest.raises(PoseError, match="members"):
        inflate(gzip.compress(b"") * 100, "gzip", 1000)


def test_binary_data_output_as_a_string_and_boxes_as_a_parameter_are_refused():
    with TestClient(app_with(GatedBackend())) as client:
        request = {"inputs": [v2_image_input(jpeg_bytes())], "parameters": {"binary_data_output": "true"}}
        assert "binary_data_output" in v2_error(client.post(INFER, json=request), 400, "invalid_request")
        request = {"inputs": [v2_image_input(jpeg_bytes())], "parameters": {"boxes": [[1, 2, 30, 40]]}}
        assert "'boxes'" in v2_error(client.post(INFER, json=request), 400, "invalid_request")
        request["parameters"] = {"binary_data_output": True}
        response = client.post(INFER, json=request)
        assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"


def test_a_trailing_slash_is_not_redirected_to_the_clients_host():
    with TestClient(app_with(GatedBackend()), follow_redirects=False) as client:
        response = client.get("/v2/", headers={"host": "evil.example"})
        assert response.status_code == 404
        assert "location" not in response.headers


def test_binary_bytes_elements_beyond_the_shape_are_refused():
    head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    with TestClient(app_with(GatedBackend())) as client:
        response = client.post(INFER, content=head + struct.pack("<I", 0) * 2, headers={
            "content-type": "application/octet-stream", "inference-header-content-length": str(len(head))})
        v2_error(response, 400, "invalid_request")
