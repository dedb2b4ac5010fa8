"""What many test files need, in one place: where ../shared lives (and skipping cleanly without it), image
builders, the error-body assertion, the one Prometheus metrics reader, a free loopback port, a process's
resident memory, and the COCO data sets.

Fixtures stay in conftest.py; plain functions and constants live here (`from tests.helpers import ...`).
"""

from __future__ import annotations

import base64
import io
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
DATA = SHARED / "data"


def require_shared(relative: str) -> Path:
    """Path under ../shared, or skip the test with the reason when it is not there."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"../shared/{relative} is absent (reference fixtures / data are not on this machine)")
    return path


# ---- COCO data sets under ../shared/data ----------------------------------------------------------------------
DATASETS = {  # name: (annotation file, image folder), under ../shared/data
    "coco-mini": ("coco-mini/test_coco.json", "coco-mini"),
    "coco8-pose": ("coco8-pose/annotations.json", "coco8-pose"),
}
DETECTIONS = "coco-mini/test_coco_det_AP_H_56.json"  # person detector boxes (AP 56.4) for coco-mini's images


def dataset_paths(name: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of a data set of DATASETS, or skip when ../shared lacks it."""
    annotations, images = DATASETS[name]
    return require_shared(f"data/{annotations}"), require_shared(f"data/{images}")


# ---- images ---------------------------------------------------------------------------------------------------
def photo(width: int = 160, height: int = 240, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like RGB uint8 array (smooth gradients plus noise): JPEG compresses it like a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str, **options: Any) -> bytes:
    """A Pillow image (or an RGB array) encoded as `fmt` ("JPEG", "PNG", ...) with Pillow's save options."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_bytes(width: int = 160, height: int = 240, seed: int = 0, quality: int = 90) -> bytes:
    """A small deterministic photo-like JPEG."""
    return encode(photo(width, height, seed), "JPEG", quality=quality)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A lossless PNG of an RGB (or gray) uint8 array: what the service decodes is exactly `pixels`."""
    return encode(pixels, "PNG")


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 array."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ---- HTTP ---------------------------------------------------------------------------------------------------------
def assert_error(response: Any, status: int, code: str) -> None:
    """The service's error body: exactly this status and stable code, a message, and the response's request ID.

    `response` is an httpx.Response (TestClient's too)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    assert body["request_id"] == response.headers["x-request-id"], body


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample `name` (e.g. pose_requests_total) of a Prometheus text exposition, with its labels, read by
    prometheus_client's own parser: the one metrics reader of the tests."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(sample.labels, float(sample.value)) for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels; 0.0 when absent (a labelled counter never incremented)."""
    return next((value for own, value in metric_samples(text, name) if own == labels), 0.0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (this one by default), from /proc/PID/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"VmRSS not found for process {pid}")


# ---- request bodies -------------------------------------------------------------------------------------------
def person_boxes(n: int) -> list[list[float]]:
    """`n` distinct boxes (x, y, w, h) that fit a 160 x 240 image."""
    return [[5.0 + i % 10, 5.0 + i % 7, 40.0, 80.0] for i in range(n)]


def v2_image_input(*images: bytes) -> dict[str, Any]:
    """The Open Inference Protocol's `image` input (BYTES [B]) in JSON, base64-encoded."""
    return {"name": "image", "shape": [len(images)], "datatype": "BYTES", "parameters": {"content_type": "base64"},
            "data": [base64.b64encode(i).decode() for i in images]}
