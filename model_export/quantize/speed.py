"""Is the INT8 model faster than its float parent on this machine? Crops per second of both, measured alike.

Both models run through the service's backend (`OrtBackend` on the CPU, all graph optimisations, the same
intra-op thread count) on the same real crops, at one batch size (4, or the model's fixed batch). The two are
timed in interleaved rounds (parent, INT8, parent, INT8...), each for a short slice, and each model's best round
counts: a busy neighbour slows a round, never speeds it up, so the best rounds compare the models rather than the
machine's moments.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posecore.backend import OrtBackend

NO_GAIN = "no speed gain on this CPU: keep float32"


@dataclass(frozen=True)
class SpeedComparison:
    parent_crops_per_s: float
    int8_crops_per_s: float
    batch: int
    threads: int  # ONNX Runtime intra-op threads (0: its default, one per core)
    cpu_cores: int
    rounds: int

    @property
    def ratio(self) -> float:
        return self.int8_crops_per_s / self.parent_crops_per_s

    @property
    def faster(self) -> bool:
        return self.ratio > 1.0

    def as_dict(self) -> dict[str, float | int]:
        return {"parent_crops_per_s": round(self.parent_crops_per_s, 2),
                "int8_crops_per_s": round(self.int8_crops_per_s, 2), "int8_over_parent": round(self.ratio, 3),
                "batch": self.batch, "intra_op_threads": self.threads, "cpu_cores": self.cpu_cores,
                "rounds": self.rounds}

    def summary(self) -> str:
        return (f"speed: INT8 {self.int8_crops_per_s:.1f} crops/s against float32 {self.parent_crops_per_s:.1f} "
                f"({self.ratio:.2f}x; batch {self.batch}, {self.cpu_cores} cores, best of {self.rounds} rounds)")


# What the quantizer calls to measure (parent, int8, batch, crops): tests pass their own to force either verdict.
SpeedProbe = Callable[[Path, Path, int, np.ndarray], SpeedComparison]


def measure_speed(parent: Path, int8: Path, batch: int, crops: np.ndarray, rounds: int = 3,
                  slice_s: float = 1.0, threads: int = 0) -> SpeedComparison:
    backends = [OrtBackend(path, provider="cpu", max_batch=batch, intra_op_threads=threads)
                for path in (parent, int8)]
    index = np.arange(batch) % len(crops)
    inputs = np.ascontiguousarray(crops[index])
    for backend in backends:  # first runs allocate and pick kernels
        backend.infer(inputs)
    best = [0.0, 0.0]
    for _ in range(rounds):
        for k, backend in enumerate(backends):
            count, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < slice_s or count == 0:
                backend.infer(inputs)
                count += 1
            best[k] = max(best[k], count * batch / elapsed)
    return SpeedComparison(best[0], best[1], batch, threads, os.cpu_count() or 1, rounds)
