"""The One-Euro filter (service/video/smoothing.py): the first value raw, jitter reduced on a noisy trajectory,
lag bounded on a moving one, parameters that do what the paper says, and time (not frame count) driving it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.video.smoothing import OneEuroFilter, OneEuroParams, PoseSmoother

FPS = 30.0


def filtered(values: np.ndarray, params: OneEuroParams | None = None, fps: float = FPS) -> np.ndarray:
    f = OneEuroFilter(params or OneEuroParams())
    return np.array([f(i / fps, v) for i, v in enumerate(values)])


def test_the_first_value_is_returned_raw():
    f = OneEuroFilter()
    x = np.array([[12.5, -3.0], [7.0, 8.0]])
    assert np.array_equal(f(0.0, x), x)


def test_jitter_on_a_still_joint_is_reduced_severalfold():
    rng = np.random.default_rng(0)
    truth = np.full((300, 2), 100.0)
    noisy = truth + rng.normal(0, 5.0, truth.shape)  # 5 px jitter, as a keypoint model gives on a still person
    out = filtered(noisy)
    raw_error = np.abs(noisy[30:] - truth[30:]).std()
    smooth_error = np.abs(out[30:] - truth[30:]).std()
    frame_to_frame = np.abs(np.diff(out[30:], axis=0)).mean() / np.abs(np.diff(noisy[30:], axis=0)).mean()
    assert smooth_error < raw_error / 2.5 and frame_to_frame < 0.2


def test_a_moving_joint_lags_boundedly_and_jitters_less():
    rng = np.random.default_rng(1)
    t = np.arange(300) / FPS
    truth = np.column_stack([100 + 200 * t, 50 + 80 * np.sin(2 * math.pi * 0.5 * t)])  # 200 px/s, 0.5 Hz sway
    noisy = truth + rng.normal(0, 4.0, truth.shape)
    out = filtered(noisy)
    # lag along x: the filtered line sits behind the true one by at most a few frames' motion
    lag_frames = np.mean(truth[60:, 0] - out[60:, 0]) / (200 / FPS)
    assert 0 <= lag_frames < 3
    # jitter: the frame-to-frame acceleration (the true path's own is ~0.3 px/frame^2 here)
    def jitter(path: np.ndarray) -> float:
        return float(np.abs(np.diff(path[60:], n=2, axis=0)).mean())

    assert jitter(out) < jitter(noisy) / 3
    # a larger beta follows speed more closely: less lag
    faster = filtered(noisy, OneEuroParams(beta=0.05))
    assert np.mean(truth[60:, 0] - faster[60:, 0]) < np.mean(truth[60:, 0] - out[60:, 0])


def test_a_lower_min_cutoff_smooths_more():
    rng = np.random.default_rng(2)
    noisy = 100 + rng.normal(0, 5.0, (200, 1))
    soft, hard = filtered(noisy, OneEuroParams(min_cutoff=3.0)), filtered(noisy, OneEuroParams(min_cutoff=0.3))
    assert hard[20:].std() < soft[20:].std()


def test_time_drives_the_filter_and_repeated_times_change_nothing():
    # the same samples at twice the frame rate are smoothed more per sample (the cutoffs are in Hz)
    step = np.concatenate([np.zeros(5), np.full(5, 10.0)])[:, None]
    at_30, at_60 = filtered(step, fps=30.0), filtered(step, fps=60.0)
    assert at_60[5, 0] < at_30[5, 0]
    # the paper's formulas, one step by hand: alpha = 1 / (1 + tau / te), tau = 1 / (2 pi fc)
    te = 1 / 30.0
    a_d = 1 / (1 + 1 / (2 * math.pi * 1.0) / te)
    dx = a_d * 10.0 / te
    a = 1 / (1 + 1 / (2 * math.pi * (1.0 + 0.007 * dx)) / te)
    assert at_30[5, 0] == pytest.approx(a * 10.0)
    f = OneEuroFilter()
    f(0.0, np.array([1.0]))
    first = f(0.1, np.array([2.0]))
    assert np.array_equal(f(0.1, np.array([50.0])), first)


def test_the_pose_smoother_filters_coordinates_per_track_and_keeps_scores():
    smoother = PoseSmoother()
    a0 = np.array([[10.0, 10.0, 0.9], [20.0, 20.0, 0.8]])
    assert np.array_equal(smoother.smooth(1, 0.0, a0), a0)
    moved = a0 + np.array([5.0, 5.0, -0.5])
    out = smoother.smooth(1, 1 / FPS, moved)
    assert np.all(out[:, :2] < moved[:, :2]) and np.all(out[:, :2] > a0[:, :2])
    assert np.array_equal(out[:, 2], moved[:, 2])
    assert np.array_equal(smoother.smooth(2, 1 / FPS, moved), moved)  # another track starts raw
    smoother.forget({2})
    assert np.array_equal(smoother.smooth(1, 2 / FPS, a0), a0)  # a forgotten track would start over
