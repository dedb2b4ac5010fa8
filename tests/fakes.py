"""Every fake the tests use, in one place, and the one builder of an app around a fake pose backend.

- `RecordingInfer`: an `infer` for the bare micro-batcher (any array in, rows out), recording every batch, able
  to be held at a gate, to be slow, or to choke on a NaN.
- `FakePoseBackend`: what the service needs of a pose backend (sizes, provider, warmup, infer) with heatmaps the
  test decides; `GatedBackend` holds its batches at a gate, `PeakBackend` puts one peak per chosen joint.
- `FailingBackend`: a real backend whose inference fails.
- `app_with(backend, ...)`: create_app over a backend, with its card (official defaults unless given).
- `POSE_JSON`: a canned /v1/pose answer, for clients talking to a fake service.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
from fastapi import FastAPI

from posecore.backend import ProviderStatus
from posecore.coco import KEYPOINT_NAMES
from posecore.contract import PoseResponse
from posecore.modelcard import ModelCard
from service.main import create_app, load_model
from service.settings import Settings
from service.state import LoadedModel

POSE_JSON = PoseResponse.model_validate({  # through the contract: the fake answer is a valid one
    "image": {"width": 10, "height": 20}, "flip": False, "timings_ms": {"inference": 1.0},
    "model": {"name": "fake", "arch": "tiny", "trained": True, "provider": "CPUExecutionProvider", "warning": None},
    "persons": [{"box": [0, 0, 10, 20], "box_score": 1.0, "score": 0.9, "coco_keypoints": [1.0, 2.0, 0.9],
                 "keypoints": [{"name": "nose", "x": 1.0, "y": 2.0, "score": 0.9}]}],
}).model_dump(mode="json")


class RecordingInfer:
    """Outputs = 2 x each item's first value; records every batch; can be held at a gate, be slow, or choke on
    NaN. `wait_entered` returns once the worker is inside one more batch, so tests order on events, not sleeps."""

    def __init__(self, delay_s: float = 0.0, gate_open: bool = True) -> None:
        self.delay_s = delay_s
        self.batches: list[np.ndarray] = []  # the first value of each item, per batch computed
        self.attempts: list[int] = []  # the size of every batch that reached it, failed ones too
        self.gate = threading.Event()
        if gate_open:
            self.gate.set()
        self._entered = threading.Semaphore(0)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.attempts.append(len(batch))
        self._entered.release()
        assert self.gate.wait(10), "the test never opened the gate"
        if np.isnan(batch).any():
            raise ValueError("NaN crop")
        time.sleep(self.delay_s)  # compute time, not synchronisation
        self.batches.append(batch[:, 0, 0, 0].copy())
        return (batch[:, :1, :2, :2] * 2).astype(np.float32)

    async def wait_entered(self, timeout_s: float = 10.0) -> bool:
        """Until the worker thread has entered one more batch (True), or the timeout passed (False)."""
        return await asyncio.to_thread(self._entered.acquire, True, timeout_s)

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    @property
    def computed(self) -> set[float]:
        return {float(v) for b in self.batches for v in b}


class FakePoseBackend:
    """A pose backend without a model: `heatmaps(batch)` says what it answers (all zeros here)."""

    num_keypoints = len(KEYPOINT_NAMES)
    provider = "CPUExecutionProvider"
    status = ProviderStatus("cpu", "CPUExecutionProvider", ok=True)

    def __init__(self, input_hw: tuple[int, int] = (256, 192), max_batch_size: int = 8) -> None:
        self.input_hw = input_hw
        self.heatmap_hw = (input_hw[0] // 4, input_hw[1] // 4)
        self.max_batch_size = max_batch_size
        self.batch_sizes = tuple(range(1, max_batch_size + 1))

    def heatmaps(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), self.num_keypoints, *self.heatmap_hw), np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.heatmaps(batch)

    def warmup(self) -> None:
        pass


class GatedBackend(FakePoseBackend):
    """Batches wait for `gate` (open by default); `entered` is set by the first batch; `computed` counts crops.
    Every heatmap peaks at the same cell."""

    def __init__(self, open_gate: bool = True) -> None:
        super().__init__(input_hw=(64, 48))
        self.gate = threading.Event()
        if open_gate:
            self.gate.set()
        self.entered = threading.Event()
        self.computed = 0

    def heatmaps(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        if not self.gate.wait(30):
            raise RuntimeError("the test never opened the gate")
        self.computed += len(batch)
        maps = super().heatmaps(batch)
        maps[:, :, 8, 6] = 1.0
        return maps


class PeakBackend(FakePoseBackend):
    """One peak of `peak` per joint of `peaks` (joint -> heatmap (x, y)), zeros elsewhere: the decoded keypoints
    land where the test says."""

    def __init__(self, peak: float, peaks: dict[int, tuple[int, int]]) -> None:
        super().__init__(input_hw=(256, 192), max_batch_size=4)
        self.peak = peak
        self.peaks = peaks

    def heatmaps(self, batch: np.ndarray) -> np.ndarray:
        maps = super().heatmaps(batch)
        for joint, (x, y) in self.peaks.items():
            maps[:, joint, y, x] = self.peak
        return maps


class FailingBackend:
    """The real backend, except that inference fails: the request gets inference_failed and errors are logged."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("simulated device failure")


def app_with(backend: Any, card: ModelCard | None = None, **settings: Any) -> FastAPI:
    """The app over `backend`, with `card` (default: the official defaults at the backend's sizes)."""
    card = card or ModelCard.official_defaults("fake", backend.input_hw, backend.heatmap_hw)
    model = LoadedModel(backend, card, card_found=True, provider_status=backend.status)
    return create_app(Settings(**({"model_path": "unused.onnx"} | settings)), model=model)


def failing_app(model_path: Any) -> FastAPI:
    """The app over the real model at `model_path`, whose inference fails."""
    loaded = load_model(Settings(model_path=model_path))
    return app_with(FailingBackend(loaded.backend), loaded.card, model_path=model_path)
