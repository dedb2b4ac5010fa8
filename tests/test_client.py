"""pose_client against the real service (a live server process on 127.0.0.1 with the tiny model), its retries
against in-test fakes whose timing we control, its CLI, and that it depends on httpx alone."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pose_client import (
    AsyncPoseClient,
    InvalidRequestError,
    OverloadedError,
    PoseClient,
    PoseConnectionError,
    PoseOptions,
    PoseResult,
    RetryPolicy,
    UnauthorizedError,
    UnavailableError,
)

from tests.fakes import POSE_JSON
from tests.helpers import DETECTIONS, free_port, jpeg_bytes, metric_value, require_shared
from tests.live_server import LiveServer

CLIENT = Path(__file__).resolve().parents[1] / "client"
API_KEY = "client-test-key"


@pytest.fixture(scope="module")
def server(tiny_onnx: Path) -> Iterator[LiveServer]:
    with LiveServer(tiny_onnx, env={"POSE_SHUTDOWN_DELAY_S": "0"}) as live:
        yield live


@pytest.fixture(scope="module")
def shedding_server(tiny_onnx: Path) -> Iterator[LiveServer]:
    """One crop admitted at a time: any concurrency at all is shed with 429 + Retry-After. Keys required."""
    with LiveServer(tiny_onnx, env={"POSE_MAX_QUEUE_CROPS": "1", "POSE_API_KEYS": API_KEY,
                                        "POSE_SHUTDOWN_DELAY_S": "0"}) as live:
        yield live


def raw_pose(base_url: str, image: bytes, boxes: list[list[float]] | None = None) -> dict:
    data = {} if boxes is None else {"boxes": json.dumps(boxes)}
    response = httpx.post(f"{base_url}/v1/pose", files={"image": ("x.jpg", image, "image/jpeg")}, data=data,
                          timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


# -- against the live service -----------------------------------------------------------------------------------
@pytest.mark.integration  # a live server process
def test_pose_result_mirrors_the_json_for_paths_bytes_and_files(server: LiveServer, tmp_path: Path) -> None:
    image = jpeg_bytes(200, 300, seed=1)
    path = tmp_path / "person.jpg"
    path.write_bytes(image)
    boxes = [[20.0, 30.0, 120.0, 220.0], [50.0, 60.0, 80.0, 160.0, 0.5]]
    expected = raw_pose(server.base_url, image, boxes)
    with PoseClient(server.base_url) as client:
        results = [client.pose(path, boxes=boxes), client.pose(str(path), boxes=boxes),
                   client.pose(image, boxes=boxes), client.pose(io.BytesIO(image), boxes=boxes)]
    for result in results:
        assert isinstance(result, PoseResult)
        assert (result.image.width, result.image.height) == (200, 300)
        assert result.model.name == "tiny" and result.model.trained is False
        assert result.flip is False
        assert re.fullmatch(r"[0-9a-f]{32}", result.request_id or "")
        assert set(result.timings_ms) == {"decode", "preprocess", "queue", "inference", "postprocess"}
        assert len(result.persons) == 2
        for person, want in zip(result.persons, expected["persons"], strict=True):
            assert list(person.box) == want["box"]
            assert person.box_score == want["box_score"] and person.score == want["score"]
            assert [(k.name, k.x, k.y, k.score) for k in person.keypoints] == \
                [(k["name"], k["x"], k["y"], k["score"]) for k in want["keypoints"]]
            assert person.coco_keypoints == want["coco_keypoints"]
    assert results[0].persons[1].box_score == 0.5


@pytest.mark.integration  # a live server process
def test_no_boxes_is_the_whole_image_and_empty_boxes_is_nobody(server: LiveServer) -> None:
    image = jpeg_bytes(160, 240)
    with PoseClient(server.base_url) as client:
        whole = client.pose(image)
        nobody = client.pose(image, boxes=[])
        xyxy = client.pose(image, boxes=[[10, 20, 110, 220]], options=PoseOptions(box_format="xyxy"))
        xywh = client.pose(image, boxes=[[10, 20, 100, 200]])
        flipped = client.pose(image, boxes=[[10, 20, 100, 200]], options=PoseOptions(flip=True))
    assert [p.box for p in whole.persons] == [(0.0, 0.0, 160.0, 240.0)]
    assert nobody.persons == []
    assert xyxy.persons == xywh.persons
    assert flipped.flip is True and xywh.flip is False
    assert flipped.persons[0].keypoints != xywh.persons[0].keypoints


@pytest.mark.integration  # a live server process
def test_render_returns_the_drawn_image(server: LiveServer) -> None:
    with PoseClient(server.base_url) as client:
        jpeg = client.render(jpeg_bytes(), boxes=[[10, 20, 100, 200]])
        png = client.render(jpeg_bytes(), format="png")
    assert jpeg.media_type == "image/jpeg" and jpeg.content[:3] == b"\xff\xd8\xff"
    assert png.media_type == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert jpeg.trained is False and "inference" in jpeg.timings_ms


@pytest.mark.integration  # a live server process
def test_pose_many_keeps_input_order_sync_and_async(server: LiveServer) -> None:
    sizes = [(120 + 10 * i, 160 + 7 * i) for i in range(7)]
    images = [jpeg_bytes(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    boxes = [None if i % 2 else [[1, 1, 50, 60]] for i in range(len(images))]
    with PoseClient(server.base_url, max_concurrency=3) as client:
        results = client.pose_many(images, boxes, progress=True)
    assert [(r.image.width, r.image.height) for r in results] == sizes
    assert [p.box for r in results for p in r.persons] == \
        [(1.0, 1.0, 50.0, 60.0) if i % 2 == 0 else (0.0, 0.0, float(w), float(h)) for i, (w, h) in enumerate(sizes)]

    async def run() -> list[PoseResult]:
        async with AsyncPoseClient(server.base_url, max_concurrency=3) as client:
            return await client.pose_many(images, boxes)

    assert [r.persons for r in asyncio.run(run())] == [r.persons for r in results]


@pytest.mark.integration  # a live server process
def test_errors_carry_code_status_and_request_id(server: LiveServer) -> None:
    with PoseClient(server.base_url) as client:
        with pytest.raises(InvalidRequestError) as corrupt:
            client.pose(b"this is not an image")
        with pytest.raises(InvalidRequestError) as bad_box:
            client.pose(jpeg_bytes(), boxes=[[10, 10, -5, 20]])
        with pytest.raises(ValueError, match="box_format"):
            client.pose(jpeg_bytes(), options=PoseOptions(box_format="cxcywh"))
        outcomes = client.pose_many([jpeg_bytes(), b"", jpeg_bytes()], return_exceptions=True)
    assert (corrupt.value.status, corrupt.value.code, corrupt.value.attempts) == (400, "corrupt_image", 1)
    assert re.fullmatch(r"[0-9a-f]{32}", corrupt.value.request_id or "")
    assert corrupt.value.request_id in str(corrupt.value)
    assert (bad_box.value.status, bad_box.value.code) == (422, "invalid_boxes")
    assert isinstance(outcomes[0], PoseResult) and isinstance(outcomes[2], PoseResult)
    assert isinstance(outcomes[1], InvalidRequestError) and outcomes[1].code == "empty_image"


def overloaded_count(base_url: str) -> float:
    return metric_value(httpx.get(f"{base_url}/metrics").text, "pose_errors_total", code="overloaded")


@pytest.mark.integration  # a live server process
def test_concurrent_pose_many_against_a_shedding_server_all_finish(shedding_server: LiveServer) -> None:
    """Three callers at once, each with several requests in flight, against a service that admits one crop:
    most first attempts are shed (429 + Retry-After), and every image still comes back, in order."""
    url = shedding_server.base_url
    images = [jpeg_bytes(100 + i, 150, seed=i) for i in range(6)]
    before = overloaded_count(url)
    outcomes: dict[str, list[PoseResult]] = {}
    retry = RetryPolicy(max_retries=15, budget_s=120)
    timeout = 300  # each call's total: longer than the waiting budget, so the budget is what gives up first

    def sync_caller(name: str) -> None:
        with PoseClient(url, api_key=API_KEY, max_concurrency=4, retry=retry, timeout=timeout) as client:
            outcomes[name] = client.pose_many(images)

    async def async_callers() -> None:
        async with AsyncPoseClient(url, api_key=API_KEY, max_concurrency=4, retry=retry, timeout=timeout) as client:
            results = await asyncio.gather(client.pose_many(images), client.pose_many(images))
        outcomes["async-1"], outcomes["async-2"] = results

    threads = [threading.Thread(target=sync_caller, args=(f"sync-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    asyncio.run(async_callers())
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(outcomes) == ["async-1", "async-2", "sync-0", "sync-1"]
    for results in outcomes.values():
        assert [r.image.width for r in results] == [100 + i for i in range(6)]
    assert overloaded_count(url) > before  # the service really shed, and the clients rode it out


@pytest.mark.integration  # a live server process
def test_api_key_is_sent_and_its_absence_is_a_typed_error(shedding_server: LiveServer) -> None:
    with PoseClient(shedding_server.base_url) as client, pytest.raises(UnauthorizedError) as refused:
        client.pose(jpeg_bytes())
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    with PoseClient(shedding_server.base_url, api_key=API_KEY) as client:
        assert client.model()["name"] == "tiny"


# -- retries, against fakes whose timing the test controls ---------------------------------------------------------
class Script:
    """A fake service: answers from a script, one per request, and notes when each request arrived."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.arrivals: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrivals.append(time.monotonic())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def shed(retry_after: str = "1", status: int = 429, code: str = "overloaded") -> httpx.Response:
    return httpx.Response(status, headers={"Retry-After": retry_after, "X-Request-ID": "req-1"},
                          json={"error": {"code": code, "message": "busy"}, "request_id": "req-1"})


def test_a_429_is_retried_no_sooner_than_retry_after() -> None:
    script = Script(shed("1"), httpx.Response(200, json=POSE_JSON))
    with PoseClient("http://fake", transport=httpx.MockTransport(script)) as client:
        result = client.pose(b"jpeg")
    assert result.model.name == "fake" and result.persons[0].keypoints[0].name == "nose"
    wait = script.arrivals[1] - script.arrivals[0]
    assert 1.0 <= wait < 1.0 * 1.25 + 0.5, wait  # Retry-After, plus at most the 25 % jitter (and some slack)


def test_async_retries_a_503_after_retry_after() -> None:
    script = Script(shed("1", 503, "not_ready"), httpx.Response(200, json=POSE_JSON))

    async def run() -> PoseResult:
        async with AsyncPoseClient("http://fake", transport=httpx.MockTransport(script)) as client:
            return await client.pose(b"jpeg")

    assert asyncio.run(run()).model.name == "fake"
    assert script.arrivals[1] - script.arrivals[0] >= 1.0


def test_the_retry_budget_and_the_retry_count_bound_the_waiting() -> None:
    far = Script(shed("30"))
    started = time.monotonic()
    with PoseClient("http://fake", transport=httpx.MockTransport(far), retry=RetryPolicy(budget_s=5)) as client, \
            pytest.raises(OverloadedError) as overloaded:
        client.pose(b"jpeg")
    assert time.monotonic() - started < 1.0  # it gave up at once instead of sleeping 30 s past its budget
    assert (overloaded.value.code, overloaded.value.retry_after_s, overloaded.value.request_id) == \
        ("overloaded", 30.0, "req-1")
    assert len(far.arrivals) == 1

    always = Script(shed("0", 503, "shutting_down"))
    policy = RetryPolicy(max_retries=3, backoff_s=0.01)
    with PoseClient("http://fake", transport=httpx.MockTransport(always), retry=policy) as client, \
            pytest.raises(UnavailableError) as unavailable:
        client.pose(b"jpeg")
    assert len(always.arrivals) == 4 and unavailable.value.attempts == 4


def test_connection_errors_are_retried_and_client_errors_are_not() -> None:
    flaky = Script(httpx.ConnectError("refused"), httpx.RemoteProtocolError("dropped"),
                   httpx.Response(200, json=POSE_JSON))
    policy = RetryPolicy(backoff_s=0.01)
    with PoseClient("http://fake", transport=httpx.MockTransport(flaky), retry=policy) as client:
        assert client.pose(b"jpeg").persons[0].score == 0.9
    assert len(flaky.arrivals) == 3

    refused = Script(httpx.Response(400, json={"error": {"code": "corrupt_image", "message": "no"}}))
    with PoseClient("http://fake", transport=httpx.MockTransport(refused), retry=policy) as client, \
            pytest.raises(InvalidRequestError):
        client.pose(b"jpeg")
    assert len(refused.arrivals) == 1

    with PoseClient(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(max_retries=2, backoff_s=0.01)) as client, \
            pytest.raises(PoseConnectionError) as unreachable:
        client.pose(b"jpeg")  # nobody listens there
    assert unreachable.value.attempts == 3


def test_fields_are_sent_only_when_given() -> None:
    sent: list[bytes] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request.read())
        return httpx.Response(200, json=POSE_JSON)

    with PoseClient("http://fake", transport=httpx.MockTransport(record)) as client:
        client.pose(b"jpeg")
        client.pose(b"jpeg", boxes=[], options=PoseOptions(box_format="xyxy", flip=True, detect=False))
    plain, full = sent
    assert b'name="boxes"' not in plain and b'name="flip"' not in plain and b'name="detect"' not in plain
    for field, value in ((b"boxes", b"[]"), (b"flip", b"true"), (b"detect", b"false"), (b"box_format", b"xyxy")):
        assert re.search(rb'name="' + field + rb'"\r\n\r\n' + re.escape(value) + rb"\r\n", full), field


def test_the_wait_is_jittered_but_never_below_retry_after() -> None:
    policy = RetryPolicy(jitter=0.25)
    waits = [policy.delay(0, 2.0) for _ in range(200)]
    assert min(waits) >= 2.0 and max(waits) <= 2.5 and len(set(waits)) > 100
    backoffs = [RetryPolicy(backoff_s=0.1, max_backoff_s=1.0, jitter=0.0).delay(n, None) for n in range(6)]
    assert backoffs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    # a request shed again and again backs off beyond a short Retry-After instead of knocking every second
    growing = [RetryPolicy(backoff_s=0.2, max_backoff_s=10.0, jitter=0.0).delay(n, 1.0) for n in range(8)]
    assert growing == pytest.approx([1.0, 1.0, 1.0, 1.6, 3.2, 6.4, 10.0, 10.0])


# -- the command line ---------------------------------------------------------------------------------------------
@pytest.mark.integration  # a live server process
def test_cli_writes_coco_keypoint_results(server: LiveServer, tmp_path: Path) -> None:
    first, second, broken = tmp_path / "000000000785.jpg", tmp_path / "000000000042.jpg", tmp_path / "broken.jpg"
    first.write_bytes(jpeg_bytes(200, 300, seed=2))
    second.write_bytes(jpeg_bytes(160, 240, seed=3))
    broken.write_bytes(b"not a jpeg")
    detections = [{"image_id": 785, "category_id": 1, "bbox": [10, 20, 100, 200], "score": 0.9},
                  {"image_id": 785, "category_id": 1, "bbox": [50, 60, 80, 160], "score": 0.6},
                  {"image_id": 785, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.9}]  # a bicycle: ignored
    boxes = tmp_path / "detections.json"
    boxes.write_text(json.dumps(detections))
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "pose_client", str(first), str(second), "--url", server.base_url,
                          "--boxes", str(boxes), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    assert [(r["image_id"], r["category_id"]) for r in results] == [(785, 1), (785, 1)]  # 42 had no detection
    assert all(len(r["keypoints"]) == 51 and isinstance(r["score"], float) for r in results)
    assert "2/2" in run.stderr  # the progress bar
    assert "untrained" in run.stderr

    whole = subprocess.run([sys.executable, "-m", "pose_client", str(second), str(broken), "--url",
                            server.base_url, "--out", str(out), "--no-progress"],
                           capture_output=True, text=True, timeout=120)
    assert whole.returncode == 1  # one image failed; the other is still written
    assert "corrupt_image" in whole.stderr and str(broken) in whole.stderr
    assert [r["image_id"] for r in json.loads(out.read_text())] == [42]


@pytest.mark.integration  # a live server process
def test_cli_on_coco_mini_with_detector_boxes_feeds_cocoeval(server: LiveServer, tmp_path: Path) -> None:
    """The real COCO images and detector boxes: one result per person box, and pycocotools reads the file."""
    coco = pytest.importorskip("pycocotools.coco", reason="pycocotools is not installed (the export extra)")
    images = sorted(require_shared("data/coco-mini").glob("*.jpg"))
    detections = require_shared(f"data/{DETECTIONS}")
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "pose_client", *map(str, images), "--url", server.base_url,
                          "--boxes", str(detections), "--out", str(out), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    persons = [d for d in json.loads(detections.read_text()) if d["category_id"] == 1]
    results = json.loads(out.read_text())
    assert len(results) == len(persons) and {r["image_id"] for r in results} == {d["image_id"] for d in persons}
    ground_truth = coco.COCO(str(require_shared("data/coco-mini/test_coco.json")))
    assert len(ground_truth.loadRes(str(out)).getAnnIds()) == len(persons)


# -- what the client depends on -----------------------------------------------------------------------------------
def test_the_package_declares_httpx_as_its_only_dependency() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert [re.split(r"[<>=!~\[ ]", d)[0] for d in project["dependencies"]] == ["httpx"]
    assert set(project["optional-dependencies"]) == {"progress", "stream"}  # tqdm; websockets for stream()


def test_client_modules_import_only_the_standard_library_and_httpx() -> None:
    # optional: tqdm (guarded), websockets (imported inside PoseClient.stream only)
    allowed = set(sys.stdlib_module_names) | {"httpx", "pose_client", "tqdm", "websockets"}
    for module in sorted((CLIENT / "pose_client").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.split(".")[0] in allowed, (module.name, name)


def test_importing_the_client_pulls_in_none_of_the_service_stack() -> None:
    """In a fresh interpreter where importing the service's stack fails outright."""
    code = f"""
import sys
BLOCKED = {{"onnxruntime", "numpy", "fastapi", "starlette", "torch", "cv2", "PIL", "pydantic", "service"}}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(CLIENT)!r})
import pose_client, pose_client.aio, pose_client.cli, pose_client.coco, pose_client.progress
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & BLOCKED)
assert not loaded, loaded
print("ok")
"""
    run = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
