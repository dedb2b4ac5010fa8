"""The One-Euro filter (Casiez, Roussel, Vogel, CHI 2012), per joint coordinate, for keypoints of tracked people.

A low-pass filter whose cutoff rises with speed: slow joints are smoothed hard (jitter gone), fast ones lightly
(little lag). Time is in seconds and the cutoffs in Hz, as the paper defines them, so a video's own timestamps
(or a stream's arrival times) drive it and a dropped frame is just a longer step.

Defaults: min_cutoff 1.0 Hz, beta 0.007, d_cutoff 1.0 Hz - mmdeploy's PoseTracker smoothing parameters
(`smooth_params`: fc_min 1, beta 0.007, fc_d 1; mmdeploy/codebase/mmpose/pose_tracker), which are also the
paper's reference implementation's cutoffs (mincutoff 1, dcutoff 1) with a speed coefficient for pixel units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float = 1.0  # Hz: the cutoff at rest; lower = smoother when still, more lag
    beta: float = 0.007  # cutoff increase per (pixel/s) of speed; higher = less lag when moving
    d_cutoff: float = 1.0  # Hz: the cutoff of the speed estimate itself


def _alpha(step_s: float, cutoff_hz: np.ndarray | float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz))
    return 1.0 / (1.0 + tau / step_s)


class OneEuroFilter:
    """Filters an array of values (any shape) sampled at increasing times; the first sample is returned raw."""

    def __init__(self, params: OneEuroParams = OneEuroParams()) -> None:
        self.params = params
        self._t: float | None = None
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, t: float, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._t is None or self._x is None or self._dx is None or self._x.shape != x.shape:
            self._t, self._x, self._dx = t, x.copy(), np.zeros_like(x)
            return x.copy()
        step = t - self._t
        if step <= 0:  # a repeated or out-of-order timestamp: nothing new can be learned from it
            return self._x.copy()
        p = self.params
        a_d = _alpha(step, p.d_cutoff)
        dx = a_d * (x - self._x) / step + (1 - a_d) * self._dx
        a = _alpha(step, p.min_cutoff + p.beta * np.abs(dx))
        self._x = a * x + (1 - a) * self._x
        self._dx = dx
        self._t = t
        return self._x.copy()


class PoseSmoother:
    """One filter per track, over its (K, 2) keypoint coordinates; scores pass through unfiltered."""

    def __init__(self, params: OneEuroParams = OneEuroParams()) -> None:
        self.params = params
        self._filters: dict[int, OneEuroFilter] = {}

    def smooth(self, track_id: int, t: float, keypoints: np.ndarray) -> np.ndarray:
        """(K, 3) x, y, score -> the same with x, y filtered."""
        smoother = self._filters.setdefault(track_id, OneEuroFilter(self.params))
        out = np.array(keypoints, dtype=np.float64, copy=True)
        out[:, :2] = smoother(t, out[:, :2])
        return out

    def forget(self, live_track_ids: set[int]) -> None:
        """Drop the filters of tracks that ended (IDs are never reused, so they would never be read again)."""
        for track_id in set(self._filters) - live_track_ids:
            del self._filters[track_id]
