"""Latency percentiles and throughput of one measured phase."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Phase:
    name: str
    requests: int
    crops: int
    seconds: float
    latencies_s: list[float]
    errors: int = 0

    def add(self, other: Phase) -> Phase:
        """Pool another measurement of the same phase (rounds are interleaved to cancel machine drift)."""
        self.requests += other.requests
        self.crops += other.crops
        self.seconds += other.seconds
        self.latencies_s += other.latencies_s
        self.errors += other.errors
        return self

    @property
    def crops_per_s(self) -> float:
        return self.crops / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    def summary(self) -> dict:
        return {
            "name": self.name,
            "requests": self.requests,
            "crops": self.crops,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "crops_per_s": round(self.crops_per_s, 2),
            "requests_per_s": round(self.requests_per_s, 2),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p95_ms": round(self.percentile_ms(95), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
        }

