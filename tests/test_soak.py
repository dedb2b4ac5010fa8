"""Soak (slow; `pytest -m slow`): 5,000 requests in a row against the real server leave its resident memory
within 5% of what it was after warm-up. The requests cycle through the shapes callers send: raw and multipart
single images with and without boxes, a small batch, and refusals (a corrupt image, bad boxes)."""

from __future__ import annotations

import base64
import itertools
import json
import time

import httpx
import pytest

from tests.helpers import jpeg_bytes
from tests.live_server import LiveServer

WARMUP_REQUESTS = 500
SOAK_REQUESTS = 5_000
MAX_GROWTH = 0.05


def request_shapes():
    photos = [jpeg_bytes(w, h, seed=s) for s, (w, h) in enumerate([(160, 240), (320, 240), (240, 320)])]
    b64 = base64.b64encode(photos[0]).decode()
    boxes = json.dumps([[10, 20, 80, 160]])

    def raw(client, i):
        return client.post("/v1/pose", content=photos[i % 3], headers={"content-type": "image/jpeg"})

    def multipart(client, i):
        return client.post("/v1/pose", files={"image": ("p.jpg", photos[i % 3], "image/jpeg")}, data={"boxes": boxes})

    def batch(client, i):
        return client.post("/v1/pose/batch", json={"items": [{"image_base64": b64}, {"image_base64": b64,
                                                                                     "boxes": [[5, 5, 60, 90]]}]})

    def corrupt(client, i):
        return client.post("/v1/pose", content=photos[i % 3][:500], headers={"content-type": "image/jpeg"})

    def bad_boxes(client, i):
        return client.post("/v1/pose", files={"image": ("p.jpg", photos[0], "image/jpeg")},
                           data={"boxes": "[[1, 2, -3, 4]]"})

    expected = {raw: 200, multipart: 200, batch: 200, corrupt: 400, bad_boxes: 422}
    schedule = [raw, multipart, raw, multipart, raw, multipart, batch, corrupt, raw, bad_boxes]
    return schedule, expected


@pytest.mark.slow
def test_5000_requests_in_a_row_keep_rss_growth_under_5_percent(tiny_onnx):
    schedule, expected = request_shapes()
    with LiveServer(tiny_onnx, env={"POSE_LOG_LEVEL": "warning"}) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            shapes = itertools.cycle(schedule)
            for i in range(WARMUP_REQUESTS):
                shape = next(shapes)
                assert shape(client, i).status_code == expected[shape]
            warm_rss = server.rss_bytes()
            samples = []
            started = time.perf_counter()
            for i in range(SOAK_REQUESTS):
                shape = next(shapes)
                response = shape(client, i)
                assert response.status_code == expected[shape], response.text
                if i % 500 == 499:
                    samples.append(server.rss_bytes())
            elapsed = time.perf_counter() - started
        final_rss = server.rss_bytes()
        growth = final_rss / warm_rss - 1
        print(f"soak: {SOAK_REQUESTS} requests in {elapsed:.0f} s; RSS after warm-up {warm_rss / 2**20:.1f} MiB, "
              f"after soak {final_rss / 2**20:.1f} MiB ({growth:+.2%}); samples (MiB): "
              f"{[round(s / 2**20, 1) for s in samples]}")
        assert growth < MAX_GROWTH
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200
