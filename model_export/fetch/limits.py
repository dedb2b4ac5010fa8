"""What one fetch may cost: a size limit and a total deadline, both settable (flag or environment).

The size limit is checked against what the server announces (Content-Length, Content-Range) before a byte is
written, and again while streaming, so a partial file never grows past it. The deadline covers the whole fetch:
connecting, every attempt, every read and every back-off, where the read timeout bounds only one read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from model_export.fetch.errors import FetchDeadlineExceeded

GIB = 1 << 30
DEFAULT_MAX_BYTES = GIB  # the largest official checkpoint (W48 384x288) is about 255 MB
DEFAULT_DEADLINE_S = 3600.0  # 255 MB at 75 KB/s; a drip-feeding server ends here, not never
MAX_BYTES_ENV = "POSE_FETCH_MAX_BYTES"
DEADLINE_ENV = "POSE_FETCH_DEADLINE_S"


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    deadline_s: float = DEFAULT_DEADLINE_S

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or not self.deadline_s > 0:
            raise ValueError("the size limit and the deadline must be positive")


DEFAULT_LIMITS = FetchLimits()


def parse_size(text: str) -> int:
    """Bytes from '1073741824', '1GiB', '300MB', '512M' (binary and decimal units); ValueError otherwise."""
    units = {"": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
             "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    stripped = text.strip().lower()
    number = stripped.rstrip("kmgib")
    unit = stripped[len(number):]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise ValueError(f"not a size: {text!r} (e.g. 1073741824, 1GiB, 300MB)") from None
    if not value >= 1 or value == float("inf"):
        raise ValueError(f"a size must be at least one byte, got {text!r}")
    return int(value)


class Deadline:
    """The moment the whole fetch must be over."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.ends = clock() + seconds

    def remaining(self) -> float:
        return self.ends - self.clock()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise FetchDeadlineExceeded(f"the fetch did not finish within its deadline of {self.seconds:g} s")

    def bound(self, seconds: float) -> float:
        """`seconds`, cut to what is left (raises once nothing is)."""
        self.check()
        return max(0.001, min(seconds, self.remaining()))
