"""The service end to end over HTTP on 127.0.0.1: a real server process and N concurrent clients."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from itertools import cycle
from pathlib import Path

import httpx

from service.bench.stats import Phase
from service.bench.workload import Photo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_service(model: Path, env: dict[str, str] | None = None, ready_timeout_s: float = 180):
    """Start `python -m service` on a free loopback port; yield (base_url, pid); stop it afterwards."""
    port = free_port()
    environment = {**os.environ, "POSE_LOG_LEVEL": "warning", **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "service", "--model", str(model), "--port", str(port)],
                               env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"service exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("service did not become ready in time")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the process's peak resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def _client(http: httpx.AsyncClient, photos: list[Photo], stop_at: float, phase: Phase) -> None:
    for photo in cycle(photos):
        if time.monotonic() >= stop_at:
            return
        started = time.perf_counter()
        response = await http.post("/v1/pose", content=photo.data, headers={"content-type": "image/jpeg"},
                                   params={"boxes": json.dumps(photo.boxes)})
        if response.status_code != 200:
            phase.errors += 1
            continue
        phase.latencies_s.append(time.perf_counter() - started)
        phase.requests += 1
        phase.crops += len(photo.boxes)


async def _load(url: str, name: str, photos: list[Photo], clients: int, seconds: float) -> Phase:
    phase = Phase(name, 0, 0, 0.0, [])
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        for photo in photos[:clients]:  # warm the connections
            await http.post("/v1/pose", content=photo.data, headers={"content-type": "image/jpeg"},
                            params={"boxes": json.dumps(photo.boxes)})
        started = time.perf_counter()
        stop_at = time.monotonic() + seconds
        # each client starts at another photo so concurrent requests differ
        await asyncio.gather(*(_client(http, photos[i:] + photos[:i], stop_at, phase) for i in range(clients)))
        phase.seconds = time.perf_counter() - started
    return phase


def http_load(url: str, name: str, photos: list[Photo], clients: int, seconds: float) -> Phase:
    return asyncio.run(_load(url, name, photos, clients, seconds))


def stage_means_ms(url: str) -> dict[str, float]:
    """Mean per-request latency of each pipeline stage, from the service's own /metrics."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for suffix, store in (("_sum", sums), ("_count", counts)):
            prefix = f"pose_stage_duration_seconds{suffix}{{stage=\""
            if line.startswith(prefix):
                stage = line[len(prefix):].split('"')[0]
                store[stage] = float(line.rsplit(" ", 1)[1])
    return {s: round(1000 * sums[s] / counts[s], 2) for s in sums if counts.get(s)}
