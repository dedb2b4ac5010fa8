"""Shared test helpers: where ../shared lives, and skipping cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

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


@pytest.fixture
def reference_npz():
    import numpy as np

    def load(name: str):
        return np.load(require_shared(f"reference/{name}"))

    return load


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """The tiny HRNet config, random-init, exported once per test session (with its model card)."""
    from model_export.export import export_onnx

    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    export_onnx("tiny", path, seed=0)
    return path


def jpeg_bytes(width: int = 160, height: int = 240, seed: int = 0, quality: int = 90) -> bytes:
    """A small deterministic photo-like JPEG (smooth gradients plus noise)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
