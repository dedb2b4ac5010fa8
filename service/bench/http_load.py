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
from urllib.parse import urlencode, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

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
                stderr = process.stderr.read() if process.stderr else b""
                raise RuntimeError(f"service exited: {stderr.decode()[-2000:]}")
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


class RawHttpClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams. The load generator shares the machine's cores
    with the service, so it must cost next to nothing: requests are pre-encoded bytes, responses are only
    framed (status line + Content-Length), never parsed as JSON."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        writer.write(raw)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def encode_request(host: str, photo: Photo, with_boxes: bool = True) -> bytes:
    """The photo as a POST; without its boxes it is a bare photo, for the service's person detector to read."""
    target = "/v1/pose?" + urlencode({"boxes": json.dumps(photo.boxes)}) if with_boxes else "/v1/pose"
    head = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(photo.data)}\r\n\r\n")
    return head.encode() + photo.data


async def _client(client: RawHttpClient, requests: list[tuple[bytes, int]], stop_at: float, phase: Phase) -> None:
    for raw, crops in cycle(requests):
        if time.monotonic() >= stop_at:
            return
        started = time.perf_counter()
        status = await client.request(raw)
        if status != 200:
            phase.errors += 1
            continue
        phase.latencies_s.append(time.perf_counter() - started)
        phase.requests += 1
        phase.crops += crops


async def _load(url: str, name: str, photos: list[Photo], clients: int, seconds: float, with_boxes: bool) -> Phase:
    parsed = urlsplit(url)
    # a bare photo's crops are whatever the detector finds: the caller counts them from /metrics
    requests = [(encode_request(parsed.netloc, photo, with_boxes), len(photo.boxes) if with_boxes else 0)
                for photo in photos]
    phase = Phase(name, 0, 0, 0.0, [])
    pool = [RawHttpClient(parsed.hostname or "127.0.0.1", parsed.port or 80) for _ in range(clients)]
    try:
        for client, request in zip(pool, cycle(requests)):  # open and warm every connection
            if await client.request(request[0]) != 200:
                raise RuntimeError("the service refused a warm-up request")
        started = time.perf_counter()
        stop_at = time.monotonic() + seconds
        # each client starts at another photo so concurrent requests differ
        await asyncio.gather(*(_client(c, requests[i:] + requests[:i], stop_at, phase) for i, c in enumerate(pool)))
        phase.seconds = time.perf_counter() - started
    finally:
        for client in pool:
            await client.close()
    return phase


def http_load(url: str, name: str, photos: list[Photo], clients: int, seconds: float,
              with_boxes: bool = True) -> Phase:
    return asyncio.run(_load(url, name, photos, clients, seconds, with_boxes))


def stage_totals(url: str) -> dict[str, tuple[float, float]]:
    """Per pipeline stage: (sum of seconds, count of requests) so far, from the service's own /metrics."""
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):  # prometheus_client's parser
        if family.name != "pose_stage_duration_seconds":
            continue
        for sample in family.samples:
            for index, suffix in enumerate(("_sum", "_count")):
                if sample.name == family.name + suffix:
                    totals.setdefault(sample.labels["stage"], [0.0, 0.0])[index] = float(sample.value)
    return {stage: (total[0], total[1]) for stage, total in totals.items()}


def stage_means_ms(before: dict, after: dict) -> dict[str, float]:
    """Mean milliseconds per request of each stage between two `stage_totals` snapshots."""
    means = {}
    for stage, (seconds, count) in after.items():
        seconds0, count0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            means[stage] = round(1000 * (seconds - seconds0) / (count - count0), 2)
    return means
