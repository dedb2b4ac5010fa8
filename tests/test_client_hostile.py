"""pose_client against a hostile server on 127.0.0.1 (issue 18, point 7): every malformed answer becomes the
client's own error, one deadline bounds a whole call however slowly the server sends, and a Retry-After given
as an HTTP date is honoured.

Each test replays what got through before: a 200 with an HTML page, a JSON list or missing and wrong-typed fields
raised JSONDecodeError / TypeError / KeyError (also from pose_many(return_exceptions=True) and the async client);
a 1 byte/s body with timeout=3 took 32 s; a Retry-After date 30 s ahead was ignored (4 tries in 1.6 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pose_client import (
    AsyncPoseClient,
    InvalidResponseError,
    OverloadedError,
    PoseClient,
    PoseClientError,
    PoseResult,
    PoseTimeoutError,
    RetryPolicy,
)
from pose_client.errors import retry_after_seconds

from tests.fakes import POSE_JSON

Answer = Callable[[BaseHTTPRequestHandler], None]


class Scripted:
    """Answers requests in turn from a script (the last answer repeats); notes each arrival's wall-clock time."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.arrivals: list[float] = []

    def next(self) -> Answer:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def make_handler(script: Scripted) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def answer(self) -> None:
            script.arrivals.append(time.time())
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client hung up
                script.next()(self)

        do_GET = do_POST = answer

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Scripted]]:
    script = Scripted()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def send(status: int, body: bytes, content_type: str = "application/json", **headers: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("X-Request-ID", "req-7")
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def pose_json(**changes: Any) -> bytes:
    data = copy.deepcopy(POSE_JSON)
    for path, value in changes.items():
        *parents, last = path.split("__")
        target: Any = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return json.dumps(data).encode()


MALFORMED = {
    "an HTML page": (send(200, b"<html><body>Welcome to nginx!</body></html>", "text/html"), "not JSON (text/html"),
    "a JSON list": (send(200, b"[1, 2, 3]"), "expected a JSON object, got a list"),
    "no persons": (send(200, pose_json(persons=KeyError)), "persons: missing"),
    "a string flip": (send(200, pose_json(flip="yes")), "flip: expected a boolean, got a string"),
    "persons as an object": (send(200, pose_json(persons={"a": 1})), "persons: expected a list, got an object"),
    "a string coordinate": (send(200, pose_json(persons__0__keypoints=[{"name": "nose", "x": "1", "y": 2.0,
                                                                       "score": 0.9}])),
                            "persons[0].keypoints[0].x: expected a number, got a string"),
    "a short box": (send(200, pose_json(persons__0__box=[1, 2, 3])), "persons[0].box: expected 4 items, got 3"),
    "a null model": (send(200, pose_json(model=None)), "model: expected a JSON object, got null"),
    "no image height": (send(200, pose_json(image={"width": 10})), "image.height: missing"),
    "not UTF-8": (send(200, b"\xff\xfe{"), "not JSON"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_success_is_an_invalid_response_error(server: tuple[str, Scripted], case: str) -> None:
    url, script = server
    answer, message = MALFORMED[case]
    script.answers = [answer]
    with PoseClient(url) as client, pytest.raises(InvalidResponseError) as error:
        client.pose(b"jpeg")
    assert message in str(error.value) and error.value.status == 200 and error.value.request_id == "req-7"
    assert len(script.arrivals) == 1  # not retried: the same server would answer the same way


def test_pose_many_and_the_async_client_return_the_typed_error(server: tuple[str, Scripted]) -> None:
    url, script = server
    script.answers = [send(200, b"[]")]
    with PoseClient(url, max_concurrency=2) as client:
        outcomes = client.pose_many([b"a", b"b", b"c"], return_exceptions=True)
        with pytest.raises(InvalidResponseError):
            client.pose_many([b"a"])
    assert all(isinstance(outcome, InvalidResponseError) for outcome in outcomes)

    async def run() -> tuple[list[PoseResult | PoseClientError], BaseException | None]:
        async with AsyncPoseClient(url) as client:
            many = await client.pose_many([b"a", b"b"], return_exceptions=True)
            try:
                await client.pose(b"a")
            except PoseClientError as error:
                return many, error
            return many, None

    many, single = asyncio.run(run())
    assert all(isinstance(outcome, InvalidResponseError) for outcome in many)
    assert isinstance(single, InvalidResponseError)


def test_model_and_render_refuse_what_they_did_not_ask_for(server: tuple[str, Scripted]) -> None:
    url, script = server
    script.answers = [send(200, b'["not", "a", "card"]'), send(200, b"<html></html>", "text/html")]
    with PoseClient(url) as client:
        with pytest.raises(InvalidResponseError, match="expected a JSON object, got a list"):
            client.model()
        with pytest.raises(InvalidResponseError, match="expected a JPEG or PNG image, got text/html"):
            client.render(b"jpeg")


def drip(handler: BaseHTTPRequestHandler) -> None:
    """A 200 whose 40-byte body comes one byte a second: every read is quick, the answer never is."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "40")
    handler.end_headers()
    for _ in range(40):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(1.0)


def test_a_drip_fed_answer_ends_at_the_call_timeout(server: tuple[str, Scripted]) -> None:
    url, script = server
    script.answers = [drip]
    started = time.monotonic()
    with PoseClient(url, timeout=3) as client, pytest.raises(PoseTimeoutError, match="timeout of 3 s"):
        client.pose(b"jpeg")
    assert 2.9 <= time.monotonic() - started < 4.5

    async def run() -> None:
        async with AsyncPoseClient(url, timeout=3) as client:
            await client.pose(b"jpeg")

    started = time.monotonic()
    with pytest.raises(PoseTimeoutError, match="timeout of 3 s"):
        asyncio.run(run())
    assert 2.9 <= time.monotonic() - started < 4.5


def test_a_retry_wait_that_would_pass_the_call_timeout_gives_up_at_once(server: tuple[str, Scripted]) -> None:
    url, script = server
    script.answers = [send(429, b'{"error": {"code": "overloaded", "message": "busy"}}', Retry_After="5")]
    started = time.monotonic()
    with PoseClient(url, timeout=2) as client, pytest.raises(OverloadedError):
        client.pose(b"jpeg")
    assert time.monotonic() - started < 1.0 and len(script.arrivals) == 1


def shed_until(seconds_ahead: float) -> tuple[Answer, float]:
    """A 429 whose Retry-After is an HTTP date `seconds_ahead` from now; and that date as a timestamp."""
    date = formatdate(time.time() + seconds_ahead, usegmt=True)
    body = b'{"error": {"code": "overloaded", "message": "busy"}}'
    return send(429, body, Retry_After=date), parsedate_to_datetime(date).timestamp()


def test_a_retry_after_date_is_never_retried_sooner(server: tuple[str, Scripted]) -> None:
    url, script = server
    shed, not_before = shed_until(2.5)
    script.answers = [shed, send(200, json.dumps(POSE_JSON).encode())]
    with PoseClient(url, retry=RetryPolicy(backoff_s=0.01)) as client:
        assert client.pose(b"jpeg").model.name == "fake"
    assert len(script.arrivals) == 2 and script.arrivals[1] >= not_before


def test_a_retry_after_date_beyond_the_budget_gives_up_at_once(server: tuple[str, Scripted]) -> None:
    url, script = server
    shed, _ = shed_until(30)
    script.answers = [shed]
    started = time.monotonic()
    with PoseClient(url, retry=RetryPolicy(budget_s=5)) as client, pytest.raises(OverloadedError) as error:
        client.pose(b"jpeg")
    assert time.monotonic() - started < 1.0 and len(script.arrivals) == 1
    assert error.value.retry_after_s is not None and 28 <= error.value.retry_after_s <= 30


@pytest.mark.parametrize(("header", "expected"), [
    ("7", 7.0), ("0", 0.0), ("-3", None), ("nan", None), ("soon", None), ("", None),
    ("Wed, 02 Dec 2026 10:00:30 GMT", 30.0), ("Wed, 02 Dec 2026 09:59:00 GMT", 0.0),  # a date already past: 0
    ("Wed, 02 Dec 2026 10:00:30 -0000", 30.0),
])
def test_retry_after_seconds_and_dates(header: str, expected: float | None) -> None:
    now = parsedate_to_datetime("Wed, 02 Dec 2026 10:00:00 GMT").timestamp()
    response = httpx.Response(429, headers={"Retry-After": header})
    assert retry_after_seconds(response, now=now) == expected
