"""The bench's PyTorch eager baseline runs in `python -m model_export eager-bench` (the bench never imports
model_export): a job in, the measured per-crop phases out, for the card's own architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

from posecore.backend import OrtBackend
from posecore.modelcard import read_card
from service.bench.baselines import eager_phases
from service.bench.workload import Photo
from tests.helpers import jpeg_bytes


def test_the_eager_phase_comes_back_from_a_model_export_subprocess(tiny_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    card, _ = read_card(tiny_onnx, OrtBackend(tiny_onnx, provider="cpu", max_batch=1))
    (tmp_path / "one.jpg").write_bytes(jpeg_bytes(160, 240))
    (tmp_path / "two.jpg").write_bytes(jpeg_bytes(200, 200, seed=1))
    single = [Photo("one.jpg", b"", [[10.0, 20.0, 100.0, 200.0]])]
    multi = [Photo("two.jpg", b"", [[0.0, 0.0, 100.0, 150.0], [50.0, 40.0, 80.0, 120.0], [5, 5, 60, 60]])]
    phases = eager_phases(card, tmp_path, {"s": ("eager single", single), "m": ("eager multi", multi)}, 0.3)
    assert phases is not None
    assert phases["s"].name == "eager single" and phases["m"].name == "eager multi"
    assert phases["s"].requests >= 1 and phases["s"].crops == phases["s"].requests
    assert phases["m"].requests >= 1 and phases["m"].crops == 3 * phases["m"].requests
    assert len(phases["m"].latencies_s) == phases["m"].requests and phases["m"].seconds >= 0.3


def test_an_unknown_architecture_is_reported_unavailable_not_a_crash(tiny_onnx: Path, tmp_path: Path) -> None:
    card, _ = read_card(tiny_onnx, OrtBackend(tiny_onnx, provider="cpu", max_batch=1))
    card = card.model_copy(update={"arch": "no_such_arch"})
    (tmp_path / "one.jpg").write_bytes(jpeg_bytes())
    assert eager_phases(card, tmp_path, {"s": ("x", [Photo("one.jpg", b"", [[1.0, 1.0, 50.0, 50.0]])])}, 0.1) is None
