"""The bench's person detector: a file given, or a YOLOX exported with seeded random weights at bench time, and
its raw inference cost per photo at batch 1 and at the batch the dynamic axis allows.

A seeded export is built by running `python -m model_export export --arch ARCH --random-init --seed S` in a
subprocess (the serving side never imports model_export), into a temporary folder that is removed afterwards:
nothing is committed, and its boxes are noise, but its cost per photo is a real YOLOX's at that size.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from posecore.detection import PersonDetector
from posecore.detection.letterbox import PAD_VALUE

SEED = 0


def resolve_bench_detector(value: str, folder: Path) -> Path:
    """`--detector`: an existing ONNX file, or a YOLOX arch (yolox_s, ...) exported with seed 0 into `folder`."""
    path = Path(value)
    if path.is_file():
        return path
    if path.suffix == ".onnx":
        raise SystemExit(f"detector not found: {path}")
    output = folder / f"{value}_seed{SEED}.onnx"
    command = [sys.executable, "-m", "model_export", "export", "--arch", value, "--random-init", "--seed", str(SEED),
               "--output", str(output)]
    print(f"building the bench detector: {' '.join(command[1:])}", file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SystemExit(f"--detector {value}: neither a file nor an arch model_export can export: {last}")
    return output


def detector_infer_ms(path: Path, batch_sizes: tuple[int, ...], seconds: float) -> dict[str, float]:
    """Mean ms per photo of the detector's ONNX Runtime call alone (CPU), at each batch size: what batching the
    dynamic axis saves per photo, without HTTP, letterbox or NMS."""
    detector = PersonDetector(path, provider="cpu", max_batch=max(batch_sizes), spin=False)
    out = {}
    for size in batch_sizes:
        batch = np.full((size, 3, *detector.input_hw), PAD_VALUE, dtype=np.float32)
        detector.infer(batch)  # first run of this shape: allocation, not steady state
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 2:
            detector.infer(batch)
            runs += 1
        out[f"batch_{size}"] = round((time.perf_counter() - start) * 1000 / (runs * size), 2)
    return out
