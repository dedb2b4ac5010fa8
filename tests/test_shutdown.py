"""Graceful shutdown of the real server process: on SIGTERM (Kubernetes) or SIGINT (Ctrl-C) /readyz turns 503
first, requests already in flight all finish with 200, new pose requests get 503 shutting_down with Retry-After,
and then the process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest

from tests.helpers import assert_error, jpeg_bytes, metric_value
from tests.live_server import LiveServer

pytestmark = pytest.mark.integration  # real server processes

IN_FLIGHT = 8
BOXES_PER_REQUEST = 12  # 96 crops of the tiny model: about 1.6 s of single-threaded CPU inference in all
SHUTDOWN_DELAY_S = 0.5  # shorter than the work in flight, so both the delay and uvicorn's drain are exercised


async def wait_until_admitted(client: httpx.AsyncClient, crops: int, timeout_s: float = 10.0) -> None:
    """Until every in-flight request's crops are admitted by the batcher (queued, running or answered)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = (await client.get("/metrics")).text
        answered = metric_value(text, "pose_requests_total", endpoint="/v1/pose", status="200")
        if metric_value(text, "pose_inflight_crops") + answered * BOXES_PER_REQUEST >= crops:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the {crops} crops were not admitted within {timeout_s} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_turns_unready_finishes_in_flight_requests_then_exits_0(tiny_onnx, sig):
    env = {"POSE_SHUTDOWN_DELAY_S": str(SHUTDOWN_DELAY_S), "POSE_MAX_QUEUE_CROPS": "256",
           "POSE_MAX_BATCH_SIZE": "8"}
    image = jpeg_bytes(320, 240, seed=7)
    boxes = json.dumps([[10 + 20 * i, 20, 60, 150] for i in range(BOXES_PER_REQUEST)])

    with LiveServer(tiny_onnx, env=env) as server:

        async def scenario():
            limits = httpx.Limits(max_connections=IN_FLIGHT + 4)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
                done_at: list[float] = []

                async def one() -> httpx.Response:
                    response = await client.post("/v1/pose", files={"image": ("p.jpg", image, "image/jpeg")},
                                                 data={"boxes": boxes})
                    done_at.append(time.monotonic())
                    return response

                tasks = [asyncio.create_task(one()) for _ in range(IN_FLIGHT)]
                await wait_until_admitted(client, IN_FLIGHT * BOXES_PER_REQUEST)
                assert not all(t.done() for t in tasks), f"the work finished before {sig.name}; make it longer"
                signalled_at = time.monotonic()
                server.send_signal(sig)

                unready_at = None
                while unready_at is None and time.monotonic() - signalled_at < 5:
                    ready = await client.get("/readyz")
                    if ready.status_code == 503:
                        unready_at = time.monotonic()
                        assert ready.json()["status"] == "not_ready" and "shutting down" in ready.json()["detail"]
                    else:
                        await asyncio.sleep(0.01)
                assert unready_at is not None, f"/readyz never turned 503 after {sig.name}"

                # during the delay the listener is still open: a new request is refused, politely
                late = await client.post("/v1/pose", files={"image": ("p.jpg", image, "image/jpeg")})
                assert_error(late, 503, "shutting_down")
                assert int(late.headers["retry-after"]) >= 1

                responses = await asyncio.gather(*tasks, return_exceptions=True)
                return signalled_at, unready_at, done_at, responses

        signalled_at, unready_at, done_at, responses = asyncio.run(scenario())
        dropped = [r for r in responses if not (isinstance(r, httpx.Response) and r.status_code == 200)]
        assert dropped == [], f"{len(dropped)} of {IN_FLIGHT} in-flight requests dropped: {dropped[:2]}"
        assert all(len(r.json()["persons"]) == BOXES_PER_REQUEST for r in responses)
        assert unready_at < max(done_at), "/readyz must turn 503 while requests are still in flight"
        assert max(done_at) - signalled_at > SHUTDOWN_DELAY_S, "the drain outlasted the delay (uvicorn's phase ran)"

        exit_code = server.wait(timeout_s=30)
        assert exit_code == 0, "\n".join(server.stderr_lines[-20:])
        messages = [r["message"] for r in server.log_records()]
        assert any(m.startswith("shutdown requested") for m in messages)
        errors = [r for r in server.log_records() if r["level"] == "error"]
        assert errors == [], json.dumps(errors, indent=1)


def test_a_second_sigterm_skips_the_rest_of_the_delay(tiny_onnx):
    with LiveServer(tiny_onnx, env={"POSE_SHUTDOWN_DELAY_S": "30"}) as server:
        server.terminate()
        deadline = time.monotonic() + 5
        while httpx.get(f"{server.base_url}/readyz").status_code != 503:
            assert time.monotonic() < deadline, "/readyz never turned 503"
            time.sleep(0.02)
        started = time.monotonic()
        server.terminate()
        assert server.wait(timeout_s=10) == 0
        assert time.monotonic() - started < 5

