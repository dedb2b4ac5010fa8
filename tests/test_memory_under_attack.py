"""The third hostile round (issue 18) against the real server: the JSON bombs' answers, peak memory and longest
/livez answer, and the idle memory left after large requests (the README's Robustness section quotes these).
Run with `pytest -m slow tests/test_memory_under_attack.py -s` to see the numbers."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
import time

import httpx
import numpy as np
import pytest

from tests.helpers import encode, jpeg_bytes, v2_image_input
from tests.live_server import LiveServer


# ---- 1 and 10, against the real server: peaks, /livez and idle memory ------------------------------------------------
class LivezWatch:
    """Polls /livez every 50 ms in a thread: the longest answer is how long the event loop stalled."""

    def __init__(self, server) -> None:
        self.server, self.worst_s, self.peak_rss = server, 0.0, server.rss_bytes()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, daemon=True),
                         threading.Thread(target=self._sample, daemon=True)]

    def _sample(self) -> None:  # apart from the polls, which wait while the server stalls
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.server.rss_bytes())
            time.sleep(0.02)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.server.base_url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get("/livez")
                self.worst_s = max(self.worst_s, time.perf_counter() - started)
                time.sleep(0.05)

    def __enter__(self) -> LivezWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def json_bombs() -> dict[str, tuple[bytes, dict[str, str], str]]:
    """The attacks of issue 18 point 1 as they were sent: name -> (body, headers, path)."""
    image = json.dumps(v2_image_input(jpeg_bytes())).encode()
    v2 = b'{"inputs": [' + image + b'], "parameters": {"x": [' + b"[]," * 22_000_000 + b"[]]}}"
    count = 16_000_000
    head = json.dumps({"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 4 * count}}]}).encode()
    batch = b'{"items": [], "x": [' + b"[]," * 22_000_000 + b"[]]}"
    return {
        "v2 gzip, 64 MB of [], in parameters": (gzip.compress(v2, 9), {"content-encoding": "gzip"}, "v2"),
        "v1 batch, 64 MB of [],": (batch, {}, "/v1/pose/batch"),
        "v2 gzip, 16 M empty BYTES elements": (gzip.compress(head + bytes(4 * count), 9), {
            "content-encoding": "gzip", "inference-header-content-length": str(len(head)),
            "content-type": "application/octet-stream"}, "v2"),
    }


@pytest.mark.integration
@pytest.mark.slow
def test_json_bombs_against_the_real_server(tiny_onnx):
    """Each attack alone, then the v2 one three at once: the answer, the peak RSS, the longest /livez answer, and
    the idle RSS after. Before the fix: 1.9 GB and a 9.4 s stall for one v2 bomb, 5.17 GB for three, all 200."""
    env = {"POSE_MAX_BODY_BYTES": str(70 * 2**20)}  # the attacks' inflated size, as in the report
    if os.environ.get("TEST_MALLOC_ARENA_MAX"):  # else python -m service limits the arenas itself
        env["MALLOC_ARENA_MAX"] = os.environ["TEST_MALLOC_ARENA_MAX"]
    with LiveServer(tiny_onnx, env=env) as server:
        idle = server.rss_bytes()
        bombs = json_bombs()
        report = []

        def send(name: str, copies: int) -> list[int]:
            body, headers, path = bombs[name]
            url = server.base_url + ("/v2/models/tiny/infer" if path == "v2" else path)

            async def all_at_once() -> list[int]:
                async with httpx.AsyncClient(timeout=120) as client:
                    responses = await asyncio.gather(*(client.post(url, content=body, headers={
                        "content-type": "application/json", **headers}) for _ in range(copies)))
                return [r.status_code for r in responses]

            with LivezWatch(server) as watch:
                statuses = asyncio.run(all_at_once())
            report.append(f"{name} x{copies} ({len(body) / 1e3:.0f} kB sent): {statuses}, peak RSS "
                          f"{watch.peak_rss / 2**30:.2f} GiB, /livez worst {watch.worst_s:.2f} s")
            return [*statuses, round(watch.worst_s * 1000)]

        outcomes = [send(name, 1) for name in bombs] + [send(next(iter(bombs)), 3)]
        time.sleep(2)
        after = server.rss_bytes()
        print("\n" + "\n".join(report) + f"\nidle RSS {idle / 2**30:.2f} -> {after / 2**30:.2f} GiB after the attacks")
        for outcome in outcomes:
            assert all(status in (413, 422) for status in outcome[:-1]), report
            assert outcome[-1] < 1500, report
        assert after - idle < 200 * 2**20, report


@pytest.mark.integration
@pytest.mark.slow
def test_idle_memory_returns_after_large_images(tiny_onnx):
    """Idle RSS grew 0.21 -> 0.82 GB over the attacks and stayed there: glibc's arenas kept what was freed. Six
    40 MP PNGs, three at a time, then idle: the RSS comes back near where it was."""
    bomb = encode(np.zeros((5000, 8000, 3), np.uint8), "PNG", compress_level=9)
    with LiveServer(tiny_onnx) as server:
        idle = server.rss_bytes()

        async def three() -> list[int]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
                responses = await asyncio.gather(*(client.post("/v1/pose", content=bomb, headers={
                    "content-type": "image/png"}) for _ in range(3)))
            return [r.status_code for r in responses]

        with LivezWatch(server) as watch:
            statuses = asyncio.run(three()) + asyncio.run(three())
        time.sleep(2)
        after = server.rss_bytes()
        print(f"\n6 x 40 MP PNG {statuses}: peak RSS {watch.peak_rss / 2**30:.2f} GiB; idle RSS {idle / 2**30:.2f} -> "
              f"{after / 2**30:.2f} GiB")
        assert 200 in statuses
        assert after - idle < 200 * 2**20
