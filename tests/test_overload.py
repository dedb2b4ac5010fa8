"""Overload: the real server, offered about 3x the request rate it sustains, sheds the excess quickly with
429/503 and Retry-After, keeps the latency of what it accepts bounded, keeps its memory bounded, never answers
another 5xx, and is still ready afterwards.

The load is open-loop (requests are sent on a fixed schedule, whatever the answers), bounded in count, in
duration and in concurrent connections, and goes only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from tests.helpers import jpeg_bytes, metric_value
from tests.live_server import LiveServer

pytestmark = pytest.mark.integration  # a real server process under real load

MAX_QUEUE_CROPS = 8
CROPS_PER_REQUEST = 2
OVERLOAD_FACTOR = 3.0
CALIBRATE_S = 2.0
OVERLOAD_S = 4.0
MAX_CONNECTIONS = 64  # the load generator's own bound: at most this many requests in flight


@dataclass
class Outcome:
    statuses: Counter = field(default_factory=Counter)
    accepted_latencies_s: list[float] = field(default_factory=list)
    refused_latencies_s: list[float] = field(default_factory=list)
    missing_retry_after: int = 0
    bodies_5xx: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else (values[0] if values else 0.0)


async def one_request(client: httpx.AsyncClient, image: bytes, boxes: str, outcome: Outcome) -> None:
    started = time.perf_counter()
    try:
        response = await client.post("/v1/pose", content=image, params={"boxes": boxes},
                                     headers={"content-type": "image/jpeg"})
    except httpx.HTTPError as exc:
        outcome.transport_errors.append(repr(exc))
        return
    elapsed = time.perf_counter() - started
    outcome.statuses[response.status_code] += 1
    if response.status_code == 200:
        outcome.accepted_latencies_s.append(elapsed)
    else:
        outcome.refused_latencies_s.append(elapsed)
        if response.status_code in (429, 503) and not response.headers.get("retry-after", "").isdigit():
            outcome.missing_retry_after += 1
        if response.status_code >= 500:
            outcome.bodies_5xx.append(response.text[:300])


async def closed_loop(base_url: str, image: bytes, boxes: str, clients: int, seconds: float) -> tuple[float, list]:
    """`clients` back-to-back callers for `seconds`: the sustained rate (req/s) and the latencies."""
    outcome = Outcome()
    stop_at = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def caller():
            while time.monotonic() < stop_at:
                await one_request(client, image, boxes, outcome)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    assert set(outcome.statuses) == {200}, outcome.statuses
    return outcome.statuses[200] / elapsed, outcome.accepted_latencies_s


async def open_loop(base_url: str, image: bytes, boxes: str, rate: float, seconds: float) -> Outcome:
    """Requests sent every 1/rate s for `seconds`, whatever the answers (at most MAX_CONNECTIONS in flight)."""
    outcome = Outcome()
    total = int(rate * seconds)
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        started = time.monotonic()
        tasks = []
        for i in range(total):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the open loop's pace is the attack: requests on a clock, not on answers
            tasks.append(asyncio.create_task(one_request(client, image, boxes, outcome)))
        await asyncio.gather(*tasks)
    return outcome


def test_three_times_the_sustainable_rate_is_shed_with_bounded_latency(tiny_onnx):
    image = jpeg_bytes(320, 240, seed=3)
    boxes = json.dumps([[20 + 120 * i, 30, 90, 180] for i in range(CROPS_PER_REQUEST)])
    env = {"POSE_MAX_QUEUE_CROPS": str(MAX_QUEUE_CROPS), "POSE_MAX_BATCH_SIZE": "4", "POSE_MAX_WAIT_MS": "2",
           "POSE_LOG_LEVEL": "warning"}
    with LiveServer(tiny_onnx, env=env) as server:
        # calibrate: one caller for the service time; as many callers as the queue admits for the capacity
        _, single = asyncio.run(closed_loop(server.base_url, image, boxes, 1, 1.0))
        single_latency_s = statistics.median(single)
        sustainable_rate, _ = asyncio.run(closed_loop(server.base_url, image, boxes,
                                                      MAX_QUEUE_CROPS // CROPS_PER_REQUEST, CALIBRATE_S))
        rss_before = server.rss_bytes()

        offered_rate = OVERLOAD_FACTOR * sustainable_rate
        outcome = asyncio.run(open_loop(server.base_url, image, boxes, offered_rate, OVERLOAD_S))
        rss_after = server.rss_bytes()

        total = sum(outcome.statuses.values())
        shed = outcome.statuses[429] + outcome.statuses[503]
        # queueing bound: the admitted crops ahead of a request, at the measured service time, with a wide margin
        requests_ahead = MAX_QUEUE_CROPS / CROPS_PER_REQUEST
        latency_bound_s = 4 * single_latency_s * (1 + requests_ahead) + 0.5
        report = (f"single {single_latency_s * 1000:.0f} ms; sustainable {sustainable_rate:.1f} req/s; offered "
                  f"{offered_rate:.1f} req/s; {dict(outcome.statuses)}; shed {shed / max(total, 1):.0%}; accepted "
                  f"p95 {p95(outcome.accepted_latencies_s) * 1000:.0f} ms (bound {latency_bound_s * 1000:.0f} ms); "
                  f"refused p95 {p95(outcome.refused_latencies_s) * 1000:.0f} ms; RSS "
                  f"{rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB")
        print(report)

        assert outcome.transport_errors == [], (outcome.transport_errors[:3], report)
        assert total == int(offered_rate * OVERLOAD_S)
        assert set(outcome.statuses) <= {200, 429, 503}, (outcome.bodies_5xx[:3], report)
        assert shed >= 0.2 * total, f"too little was shed at 3x the sustainable rate: {report}"
        assert outcome.statuses[200] >= 0.5 * sustainable_rate * OVERLOAD_S, f"it stopped serving: {report}"
        assert outcome.missing_retry_after == 0, report
        assert p95(outcome.accepted_latencies_s) < latency_bound_s, report
        assert p95(outcome.refused_latencies_s) < latency_bound_s, f"shedding must be fast: {report}"
        assert rss_after < rss_before + 150 * 2**20, report

        # afterwards: ready, serving, and nothing left admitted
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200
        good = httpx.post(f"{server.base_url}/v1/pose", content=image, params={"boxes": boxes},
                          headers={"content-type": "image/jpeg"}, timeout=30)
        assert good.status_code == 200 and len(good.json()["persons"]) == CROPS_PER_REQUEST
        metrics = httpx.get(f"{server.base_url}/metrics").text
        assert metric_value(metrics, "pose_inflight_crops") == 0
        assert metric_value(metrics, "pose_errors_total", code="overloaded") == outcome.statuses[429]
        assert server.process.poll() is None
