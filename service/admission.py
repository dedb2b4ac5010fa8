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
    """Pixels held for one request's decoded image. A context manager: the request holds it while it needs the
    image; a worker thread that works on the image borrows it (`lend` / `returned`), so the pixels go back only
    when the request is done with them AND no worker still holds the image (a deadline gives up on a worker,
    it cannot stop it). Thread-safe; `release` is idempotent."""

    def __init__(self, budget: PixelBudget, pixels: int) -> None:
        self._budget = budget
        self.pixels = pixels
        self._owned = True
        self._lent = 0
        self._returned = False

    def __enter__(self) -> PixelReservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """The request is done with the image."""
        with self._budget._lock:
            self._owned = False
            self._give_back()

    def lend(self) -> None:
        """A worker is about to use the image (called before it is queued, so a cancelled one is counted too)."""
        with self._budget._lock:
            self._lent += 1

    def returned(self) -> None:
        with self._budget._lock:
            self._lent -= 1
            self._give_back()

    def _give_back(self) -> None:
        if not self._owned and self._lent == 0 and not self._returned:
            self._returned = True
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
