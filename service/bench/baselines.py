"""What the service is measured against: (a) the raw ONNX Runtime ceiling on ready-made crops, and the
per-crop pipelines without batching: (c) PyTorch eager, the official style, and (d) ONNX Runtime."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import cycle
from pathlib import Path

import numpy as np

from posecore.backend import OrtBackend
from posecore.boxes import parse_boxes
from posecore.codec import PoseCodec
from posecore.imaging import decode_image
from posecore.modelcard import ModelCard
from service.bench.stats import Phase
from service.bench.workload import Photo


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
    """One request at a time, one crop at a time, through the service's own codec: decode, crop, normalise,
    infer, decode heatmaps."""
    codec = PoseCodec(card)
    latencies, crops, started = [], 0, time.perf_counter()
    for photo in cycle(photos):
        if time.perf_counter() - started >= budget_s:
            break
        t = time.perf_counter()
        image = decode_image(photo.data, 50_000_000, 100_000_000)
        rows = parse_boxes(photo.boxes)
        assert rows is not None
        for i in range(len(rows)):
            prepared = codec.crops(image, rows[i : i + 1], flip=False)
            codec.persons(prepared, infer_one(prepared.inputs))
        crops += len(rows)
        latencies.append(time.perf_counter() - t)
    return Phase(name, len(latencies), crops, time.perf_counter() - started, latencies)


def torch_eager_infer(card: ModelCard) -> Callable[[np.ndarray], np.ndarray] | None:
    """The same architecture in PyTorch eager mode (weights do not change its speed); None without torch."""
    try:
        import torch

        from model_export.configs import get_config
        from model_export.hrnet import build_hrnet
    except ImportError:
        return None
    try:
        model = build_hrnet(get_config(card.arch), seed=card.weights.seed or 0).eval()
    except (KeyError, ValueError):
        return None

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return infer


def ort_per_crop_infer(model_path: Path, intra_op_threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    backend = OrtBackend(model_path, provider="cpu", intra_op_threads=intra_op_threads, max_batch=1)
    return backend.infer
