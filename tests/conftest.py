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
