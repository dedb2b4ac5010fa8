"""A progress bar for pose_many and the CLI: tqdm when it is installed (`pip install 'pose-client[progress]'`),
otherwise a plain counter on stderr, so the client itself needs nothing but httpx."""

from __future__ import annotations

import sys
import time
from typing import Protocol


class Progress(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


class NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class CounterProgress:
    """`pose: 120/500` on stderr, at most twice a second, and once at the end."""

    def __init__(self, total: int, description: str, interval_s: float = 0.5) -> None:
        self.total = total
        self.description = description
        self.interval_s = interval_s
        self.done = 0
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval_s or self.done >= self.total:
            self._last = now
            sys.stderr.write(f"\r{self.description}: {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def make_progress(total: int, enabled: bool, description: str = "pose") -> Progress:
    if not enabled:
        return NoProgress()
    try:
        from tqdm import tqdm  # optional extra
    except ImportError:
        return CounterProgress(total, description)
    bar: Progress = tqdm(total=total, desc=description, unit="image")
    return bar
