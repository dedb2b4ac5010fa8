"""What the service is measured against: (a) the raw ONNX Runtime ceiling on ready-made crops, and the
per-crop pipelines without batching: (c) PyTorch eager, the official style, and (d) ONNX Runtime.

(c) runs in `python -m model_export eager-bench` (where torch lives; this package never imports model_export),
one subprocess per round, so it stays interleaved with the other phases."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from posecore.backend import OrtBackend
from posecore.codec import PoseCodec
from posecore.modelcard import ModelCard
from posecore.per_crop import run_per_crop
from service.bench.stats import Phase
from service.bench.workload import Photo

EAGER_UNAVAILABLE = 3  # model_export eager-bench's exit status without torch


def model_only(backend: OrtBackend, batch_size: int, budget_s: float) -> Phase:
    """Raw ONNX Runtime on ready-made crops: no decode, no HTTP, no queue."""
    height, width = backend.input_hw
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, height, width), dtype=np.float32)
    backend.infer(batch)
    latencies, started = [], time.perf_counter()
    while time.perf_counter() - started < budget_s:
        t = time.perf_counter()
        backend.infer(batch)
        latencies.append(time.perf_counter() - t)
    return Phase(f"raw ORT, batch {batch_size}", len(latencies), batch_size * len(latencies),
                 time.perf_counter() - started, latencies)


def best_batch_size(backend: OrtBackend, budget_s: float, batch_sizes=(1, 2, 4, 8)) -> tuple[int, dict[int, float]]:
    """The ceiling's batch size: the fastest of a short sweep (crops/s by batch size)."""
    sizes = [s for s in batch_sizes if s <= backend.max_batch_size]
    sweep = {size: round(model_only(backend, size, budget_s / len(sizes)).crops_per_s, 2) for size in sizes}
    return max(sweep, key=lambda size: sweep[size]), sweep


def per_crop_pipeline(name: str, photos: list[Photo], card: ModelCard, infer_one: Callable[[np.ndarray], np.ndarray],
                      budget_s: float) -> Phase:
    """One request at a time, one crop at a time, through the service's own codec (posecore/per_crop.py)."""
    run = run_per_crop([(photo.data, photo.boxes) for photo in photos], PoseCodec(card), infer_one, budget_s)
    return Phase(name, run.requests, run.crops, run.seconds, run.latencies_s)


def eager_phases(card: ModelCard, people_dir: Path, workloads: dict[str, tuple[str, list[Photo]]],
                 budget_s: float) -> dict[str, Phase] | None:
    """(c): each workload (key: (phase name, photos)) per crop in PyTorch eager mode, `budget_s` each, in a
    `python -m model_export eager-bench` subprocess. None when torch (or the architecture) is not there."""
    job = {"card": card.model_dump(mode="json"), "seconds": budget_s,
           "workloads": {key: [{"path": str(people_dir / photo.name), "boxes": photo.boxes} for photo in photos]
                         for key, (_, photos) in workloads.items()}}
    done = subprocess.run([sys.executable, "-m", "model_export", "eager-bench"], input=json.dumps(job), text=True,
                          capture_output=True, check=False)
    if done.returncode == EAGER_UNAVAILABLE:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"model_export eager-bench failed ({done.returncode}): {done.stderr[-2000:]}")
    runs = json.loads(done.stdout)
    return {key: Phase(name, **runs[key]) for key, (name, _) in workloads.items()}


def ort_per_crop_infer(model_path: Path, intra_op_threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    backend = OrtBackend(model_path, provider="cpu", intra_op_threads=intra_op_threads, max_batch=1)
    return backend.infer
