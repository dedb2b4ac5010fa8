"""`python -m model_export eager-bench`: the PyTorch eager baseline of the service's bench, where torch lives.

The bench (`python -m service.bench`, which must not import this package) runs this once per round and reads
one JSON line back, so the baseline stays interleaved with the service's phases. Reads a job from stdin:
    {"card": {the served model's card}, "seconds": 4.0, "workloads": {"single": [{"path": "a.jpg", "boxes": [[x,
     y, w, h]]}, ...], ...}}
and prints {"single": {"requests": .., "crops": .., "seconds": .., "latencies_s": [..]}} (posecore/per_crop.py:
the same per-crop pipeline the bench times with ONNX Runtime, here with the same architecture in PyTorch eager
mode; weights do not change its speed). The command line is model_export/eager_bench_cli.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from posecore.codec import PoseCodec
from posecore.modelcard import ModelCard
from posecore.per_crop import run_per_crop


def torch_eager_infer(card: ModelCard) -> Callable[[np.ndarray], np.ndarray] | None:
    """The card's architecture in PyTorch eager mode; None without torch or for an unknown architecture."""
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


def run_job(job: dict[str, Any]) -> dict[str, Any] | None:
    card = ModelCard.model_validate(job["card"])
    infer = torch_eager_infer(card)
    if infer is None:
        return None
    codec = PoseCodec(card)
    runs = {}
    for name, photos in job["workloads"].items():
        loaded = [(Path(photo["path"]).read_bytes(), photo["boxes"]) for photo in photos]
        runs[name] = dataclasses.asdict(run_per_crop(loaded, codec, infer, float(job["seconds"])))
    return runs
