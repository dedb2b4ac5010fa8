"""Access control and hygiene: API keys (env variable or secret file, constant-time compare), open or closed
probes, a request ID in every response and every request's log lines, JSON logs free of image content and
keys, CORS off unless configured, and the request-body limit on a real socket."""

from __future__ import annotations

import base64
import json
import logging
import re

import httpx
import pytest
from fastapi.testclient import TestClient

from service.logs import JsonFormatter
from service.main import create_app
from service.settings import Settings
from tests.fakes import failing_app
from tests.helpers import assert_error, jpeg_bytes
from tests.live_server import LiveServer

SECRET = "s3cr3t-Key-7b1f0c9e44d2a6"
OTHER = "other-Key-91aa03c5"
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def app_client(tiny_onnx, **settings) -> TestClient:
    return TestClient(create_app(Settings(model_path=tiny_onnx, **settings)))


def post_image(client, **kwargs) -> httpx.Response:
    return client.post("/v1/pose", files={"image": ("p.jpg", jpeg_bytes(), "image/jpeg")}, **kwargs)


# -- API keys -----------------------------------------------------------------------------------------
def test_without_keys_everything_is_open(tiny_onnx):
    with app_client(tiny_onnx) as client:
        assert post_image(client).status_code == 200
        assert client.get("/v1/model").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_keys_from_the_environment(tiny_onnx, monkeypatch):
    monkeypatch.setenv("POSE_API_KEYS", f" {SECRET} , {OTHER} ,")
    with TestClient(create_app(Settings(model_path=tiny_onnx))) as client:
        assert_error(post_image(client), 401, "unauthorized")
        assert_error(post_image(client, headers={"x-api-key": SECRET[:-1]}), 401, "unauthorized")
        assert_error(post_image(client, headers={"x-api-key": SECRET + "x"}), 401, "unauthorized")
        assert_error(post_image(client, headers={"authorization": f"Basic {SECRET}"}), 401, "unauthorized")
        assert_error(client.get("/v1/model", headers={"x-api-key": ""}), 401, "unauthorized")
        assert post_image(client, headers={"x-api-key": SECRET}).status_code == 200
        assert post_image(client, headers={"authorization": f"Bearer {OTHER}"}).status_code == 200
        assert client.get("/v1/model", headers={"x-api-key": OTHER}).status_code == 200
        # the probes, the page and the API docs stay open by default
        for path in ("/livez", "/readyz", "/metrics", "/", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path
        # refusals are counted by their code
        assert "unauthorized" in client.get("/metrics").text


def test_keys_from_a_secret_file(tiny_onnx, tmp_path, monkeypatch):
    key_file = tmp_path / "api-keys"
    key_file.write_text(f"{SECRET}\n\n  {OTHER}  \n")
    monkeypatch.setenv("POSE_API_KEYS_FILE", str(key_file))
    with TestClient(create_app(Settings(model_path=tiny_onnx))) as client:
        assert_error(client.get("/v1/model"), 401, "unauthorized")
        assert_error(client.get("/v1/model", headers={"x-api-key": "nope"}), 401, "unauthorized")
        assert client.get("/v1/model", headers={"x-api-key": SECRET}).status_code == 200
        assert client.get("/v1/model", headers={"x-api-key": OTHER}).status_code == 200


def test_probes_can_be_closed_too(tiny_onnx):
    with app_client(tiny_onnx, api_keys=SECRET, auth_probes=True) as client:
        for path in ("/livez", "/readyz", "/metrics"):
            assert_error(client.get(path), 401, "unauthorized")
            assert client.get(path, headers={"x-api-key": SECRET}).status_code == 200


def test_keys_are_compared_in_constant_time_against_every_key(tiny_onnx, monkeypatch):
    import service.middleware as middleware

    calls = []
    real = middleware.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", spy)
    keys = [SECRET, OTHER, "third-key"]
    with app_client(tiny_onnx, api_keys=",".join(keys)) as client:
        calls.clear()
        assert client.get("/v1/model", headers={"x-api-key": SECRET}).status_code == 200
        assert len(calls) == len(keys), "no early exit at the first match"
        calls.clear()
        assert_error(client.get("/v1/model", headers={"x-api-key": "wrong"}), 401, "unauthorized")
        assert len(calls) == len(keys)


# -- request IDs ----------------------------------------------------------------------------------------
def test_every_response_carries_a_request_id(tiny_onnx):
    with app_client(tiny_onnx, api_keys=SECRET, max_body_bytes=50_000) as client:
        key = {"x-api-key": SECRET}
        responses = {
            "ok": post_image(client, headers=key),
            "probe": client.get("/livez"),
            "page": client.get("/"),
            "unauthorized": client.get("/v1/model"),
            "not_found": client.get("/nope", headers=key),
            "method": client.get("/v1/pose", headers=key),
            "media": client.post("/v1/pose", content=b"x", headers={**key, "content-type": "text/plain"}),
            "too_large": client.post("/v1/pose", content=b"\0" * 60_000,
                                     headers={**key, "content-type": "image/jpeg"}),
            "corrupt": client.post("/v1/pose", content=b"\xff\xd8\xff\xe0junk",
                                   headers={**key, "content-type": "image/jpeg"}),
            "validation": client.post("/v1/pose?box_format=polar", content=jpeg_bytes(),
                                      headers={**key, "content-type": "image/jpeg"}),
        }
        seen = set()
        for name, response in responses.items():
            request_id = response.headers.get("x-request-id", "")
            assert HEX_ID.match(request_id), (name, response.status_code, request_id)
            seen.add(request_id)
            if response.status_code >= 400:
                assert response.json()["request_id"] == request_id, name
        assert len(seen) == len(responses), "each request gets its own ID"


def test_a_callers_request_id_is_kept_only_when_safe(tiny_onnx):
    with app_client(tiny_onnx) as client:
        assert client.get("/livez", headers={"x-request-id": "trace-42.a_b:c"}).headers["x-request-id"] == \
            "trace-42.a_b:c"
        for unsafe in ("a" * 129, "id with spaces", "x\"}, {\"level\": \"error", "<script>"):
            echoed = client.get("/livez", headers={"x-request-id": unsafe}).headers["x-request-id"]
            assert HEX_ID.match(echoed), (unsafe, echoed)


class FormattedRecords(logging.Handler):
    """Formats each record when it is emitted (the request ID lives in a contextvar of the emitting task)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("httpx", "httpcore")):  # the test's client, not the service
            self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def formatted_logs():
    handler = FormattedRecords()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_error_log_lines_of_a_failing_request_carry_its_request_id(tiny_onnx, formatted_logs):
    with TestClient(failing_app(tiny_onnx)) as client:
        formatted_logs.lines.clear()
        response = post_image(client, headers={"x-request-id": "failing-request-1"})
        assert_error(response, 500, "inference_failed")
    handler_lines = [r for r in formatted_logs.lines if r["logger"] in ("service.main", "service.access")]
    assert {r["message"] for r in handler_lines} >= {"request failed: inference_failed: inference failed: "
                                                     "RuntimeError", "request"}
    assert all(r["request_id"] == "failing-request-1" for r in handler_lines), handler_lines


def test_every_log_line_of_a_failing_request_carries_its_request_id(tiny_onnx, formatted_logs):
    with TestClient(failing_app(tiny_onnx)) as client:
        formatted_logs.lines.clear()
        assert post_image(client, headers={"x-request-id": "failing-request-2"}).status_code == 500
        lines = list(formatted_logs.lines)
    assert any(r["logger"] == "service.batching" for r in lines)
    assert [(r["logger"], r["message"]) for r in lines if r["request_id"] != "failing-request-2"] == []


# -- the real server's JSON logs --------------------------------------------------------------------------
LIFECYCLE_LOGGERS = {"uvicorn.error", "service", "service.main", "posecore.backend"}


@pytest.mark.integration
def test_server_json_logs_have_request_ids_and_never_images_or_keys(tiny_onnx):
    image = jpeg_bytes(200, 150, seed=11)
    image_b64 = base64.b64encode(image).decode()
    with LiveServer(tiny_onnx, env={"POSE_API_KEYS": SECRET}) as server:
        key = {"x-api-key": SECRET}
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            sent = {
                "log-multipart": client.post("/v1/pose", headers={**key, "x-request-id": "log-multipart"},
                                             files={"image": ("p.jpg", image, "image/jpeg")},
                                             data={"boxes": "[[10, 10, 50, 100]]"}),
                "log-raw": client.post("/v1/pose", params={"boxes": "[[10, 10, 50, 100]]"}, content=image,
                                       headers={**key, "x-request-id": "log-raw", "content-type": "image/jpeg"}),
                "log-batch": client.post("/v1/pose/batch", headers={**key, "x-request-id": "log-batch"},
                                         json={"items": [{"image_base64": image_b64}, {"image_base64": "!!"}]}),
                "log-render": client.post("/v1/pose/render", headers={**key, "x-request-id": "log-render"},
                                          files={"image": ("p.jpg", image, "image/jpeg")}),
                "log-corrupt": client.post("/v1/pose", content=image[: len(image) // 2],
                                           headers={**key, "x-request-id": "log-corrupt",
                                                    "content-type": "image/jpeg"}),
                "log-wrong-key": client.post("/v1/pose", content=image,
                                             headers={"x-api-key": OTHER, "x-request-id": "log-wrong-key",
                                                      "content-type": "image/jpeg"}),
                "log-bearer": client.get("/v1/model", headers={"authorization": f"Bearer {SECRET}",
                                                               "x-request-id": "log-bearer"}),
                "log-404": client.get("/nope", headers={**key, "x-request-id": "log-404"}),
            }
        statuses = {name: r.status_code for name, r in sent.items()}
        assert statuses == {"log-multipart": 200, "log-raw": 200, "log-batch": 200, "log-render": 200,
                            "log-corrupt": 400, "log-wrong-key": 401, "log-bearer": 200, "log-404": 404}
        for name, response in sent.items():
            assert response.headers["x-request-id"] == name
        server.stop()
        records = server.log_records()  # raises if any stderr line is not a JSON object
        raw_text = "\n".join(server.stderr_lines)

    # every request is in the log, under its own ID; every line with a request context names a request sent
    access = [r for r in records if r["logger"] == "service.access"]
    assert {r["request_id"] for r in access} == set(sent)
    assert {r["request_id"]: r["status"] for r in access} == statuses
    for record in records:
        assert {"ts", "level", "logger", "request_id", "message"} <= set(record)
        if record["request_id"] == "-":
            assert record["logger"] in LIFECYCLE_LOGGERS and "path" not in record, record
        else:
            assert record["request_id"] in sent, record
    # hygiene: no key (right or wrong), no image bytes, no base64 of them, no query strings with boxes
    for needle in (SECRET, OTHER, image_b64[:24], image_b64[len(image_b64) // 2:][:24], "JFIF", "\\u00ff\\u00d8",
                   "boxes="):
        assert needle not in raw_text, needle
    assert max(len(line) for line in server.stderr_lines) < 2000


# -- CORS ------------------------------------------------------------------------------------------------
ORIGIN = "https://pose-ui.example"


def preflight(client, origin: str = ORIGIN) -> httpx.Response:
    return client.options("/v1/pose", headers={"origin": origin, "access-control-request-method": "POST",
                                               "access-control-request-headers": "x-api-key"})


def test_cors_is_off_by_default(tiny_onnx):
    with app_client(tiny_onnx) as client:
        response = post_image(client, headers={"origin": ORIGIN})
        assert response.status_code == 200
        assert not any(h.startswith("access-control-") for h in response.headers)
        refused = preflight(client)
        assert_error(refused, 405, "method_not_allowed")  # no CORS: OPTIONS is just a method /v1/pose lacks
        assert "access-control-allow-origin" not in refused.headers


def test_cors_for_a_configured_origin_only(tiny_onnx):
    with app_client(tiny_onnx, cors_origins=f"{ORIGIN}, https://other.example", api_keys=SECRET) as client:
        ok = preflight(client)
        assert ok.status_code == 200, ok.text
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in ok.headers["access-control-allow-methods"]
        assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
        assert HEX_ID.match(ok.headers["x-request-id"])

        answered = post_image(client, headers={"origin": ORIGIN, "x-api-key": SECRET})
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in answered.headers["access-control-expose-headers"].lower()
        # a refusal is readable by the page too (else the browser reports a bare network error)
        refused = post_image(client, headers={"origin": ORIGIN})
        assert_error(refused, 401, "unauthorized")
        assert refused.headers["access-control-allow-origin"] == ORIGIN

        stranger = post_image(client, headers={"origin": "https://evil.example", "x-api-key": SECRET})
        assert "access-control-allow-origin" not in stranger.headers
        assert preflight(client, "https://evil.example").status_code == 400


# -- body limits on a real socket --------------------------------------------------------------------------
@pytest.mark.integration
def test_body_limit_on_the_real_server_with_and_without_content_length(tiny_onnx):
    limit = 64 * 1024
    with LiveServer(tiny_onnx, env={"POSE_MAX_BODY_BYTES": str(limit)}) as server, \
            httpx.Client(base_url=server.base_url, timeout=30) as client:
        declared = client.post("/v1/pose", content=b"\0" * (limit + 1), headers={"content-type": "image/png"})
        assert_error(declared, 413, "payload_too_large")

        def chunks():
            for _ in range(8):
                yield b"\0" * (limit // 4)

        streamed = client.post("/v1/pose", content=chunks(), headers={"content-type": "image/png"})
        assert "content-length" not in streamed.request.headers
        assert streamed.request.headers["transfer-encoding"] == "chunked"
        assert_error(streamed, 413, "payload_too_large")

        multipart = client.post("/v1/pose", files={"image": ("big.png", b"\0" * (2 * limit), "image/png")})
        assert_error(multipart, 413, "payload_too_large")
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/pose", files={"image": ("p.jpg", jpeg_bytes(), "image/jpeg")}).status_code == 200
