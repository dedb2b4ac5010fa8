"""Admission of decoded pixels: memory, not crops, is what a large image costs.

The batcher admits crops; a 40-megapixel photo is one crop but about 240 MB while it is decoded (Pillow's
buffer plus the RGB array). `PixelBudget` bounds the pixels held at once across all requests, checked from the
image header before any decoding, so concurrent large images answer 429 instead of growing the process into an
out-of-memory kill. An idle budget admits any single image (the per-image limit is POSE_MAX_IMAGE_PIXELS).
"""

from __future__ import annotations

import threading

from posecore.errors import RETRY_AFTER_S, PoseError


class PixelReservation:
    """Pixels held by one request; `release` is idempotent and thread-safe (called from a worker thread)."""

    def __init__(self, budget: PixelBudget, pixels: int) -> None:
        self._budget = budget
        self.pixels = pixels
        self._open = True

    def release(self) -> None:
        with self._budget._lock:
            if self._open:
                self._open = False
                self._budget._held -= self.pixels


class PixelBudget:
    def __init__(self, max_pixels: int, retry_after_s: float = RETRY_AFTER_S["overloaded"]) -> None:
        self.max_pixels = max_pixels
        self.retry_after_s = retry_after_s
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def reserve(self, pixels: int) -> PixelReservation:
        with self._lock:
            if self._held and self._held + pixels > self.max_pixels:
                raise PoseError(
                    "overloaded",
                    f"too many image pixels being decoded ({self._held} + {pixels} of {self.max_pixels}); retry later",
                    retry_after_s=self.retry_after_s,
                )
            self._held += pixels
        return PixelReservation(self, pixels)
