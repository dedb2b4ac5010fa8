"""Session fixtures. Plain helpers (paths, require_shared, image builders, assert_error...) live in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import require_shared


@pytest.fixture
def reference_npz() -> Callable[[str], np.lib.npyio.NpzFile]:
    def load(name: str) -> np.lib.npyio.NpzFile:
        return np.load(require_shared(f"reference/{name}"))

    return load


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny HRNet config, random-init, exported once per test session (with its model card)."""
    from model_export.export import export_onnx

    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    export_onnx("tiny", path, seed=0)
    return path
