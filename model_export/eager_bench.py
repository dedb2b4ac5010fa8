"""`python -m model_export eager-bench`: the PyTorch eager baseline of the service's bench, where torch lives.

The bench (`python -m service.bench`, which must not import this package) runs this once per round and reads
one JSON line back, so the baseline stays interleaved with the service's phases. Reads a job from stdin:
    {"card": {the served model's card}, "seconds": 4.0, "workloads": {"single": [{"path": "a.jpg", "boxes": [[x,
     y, w, h]]}, ...], ...}}
and prints {"single": {"requests": .., "crops": .., "seconds": .., "latencies_s": [..]}} (posecore/per_crop.py:
the same per-crop pipeline the bench times with ONNX Runtime, here with the same architecture in PyTorch eager
mode; weights do not change its speed). Exit status 3: torch or the architecture is not available here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from posecore.codec import PoseCodec
from posecore.modelcard import ModelCard
from posecore.per_crop import run_per_crop

UNAVAILABLE = 3


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


def add_eager_bench_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("eager-bench", help="the bench's PyTorch eager baseline (a job on stdin)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run_eager_bench_command)


def run_eager_bench_command(args: argparse.Namespace) -> int:
    runs = run_job(json.loads(sys.stdin.read()))
    if runs is None:
        print("eager-bench: torch (or this architecture) is not available here", file=sys.stderr)
        return UNAVAILABLE
    print(json.dumps(runs))
    return 0
