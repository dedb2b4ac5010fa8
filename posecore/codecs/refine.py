"""mmpose 1.x's heatmap decoding, vectorised over persons and joints: the maximum, the three refinements and the
DARK blur. Each function gives bit-identical results to its mmpose counterpart run per person
(mmpose/codecs/utils/post_processing.py, refinement.py, msra_heatmap.py, udp_heatmap.py; tests/fixtures/mmpose):
the same dtypes, the same operation order. Inputs are (N, K, H, W) float32 heatmaps; nothing is written in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def heatmap_maximum(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_heatmap_maximum: (locations float32 (N, K, 2) x, y; values (N, K)). The first maximum in row-major order
    wins; a joint whose maximum is <= 0 is put at (-1, -1) (the official HRNet code puts it at (0, 0))."""
    n, k, height, width = heatmaps.shape
    flat = heatmaps.reshape(n * k, height * width)
    y, x = np.unravel_index(np.argmax(flat, axis=1), (height, width))
    locations = np.stack((x, y), axis=-1).astype(np.float32)
    values = np.amax(flat, axis=1)
    locations[values <= 0.0] = -1
    return locations.reshape(n, k, 2), values.reshape(n, k)


def refine_msra(keypoints: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """refine_keypoints: a quarter pixel towards the higher neighbour, each axis tested on its own
    (dx when 1 < x < W-1 and 0 < y < H; dy when 1 < y < H-1 and 0 < x < W; x, y truncated to int)."""
    height, width = heatmaps.shape[2:]
    x = keypoints[..., 0].astype(int)
    y = keypoints[..., 1].astype(int)
    ni = np.broadcast_to(np.arange(x.shape[0])[:, None], x.shape)
    ki = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    use_dx = (x > 1) & (x < width - 1) & (y > 0) & (y < height)
    use_dy = (y > 1) & (y < height - 1) & (x > 0) & (x < width)
    dx = np.zeros(x.shape, heatmaps.dtype)
    dy = np.zeros(x.shape, heatmaps.dtype)
    n, k, yy, xx = ni[use_dx], ki[use_dx], y[use_dx], x[use_dx]
    dx[use_dx] = heatmaps[n, k, yy, xx + 1] - heatmaps[n, k, yy, xx - 1]
    n, k, yy, xx = ni[use_dy], ki[use_dy], y[use_dy], x[use_dy]
    dy[use_dy] = heatmaps[n, k, yy + 1, xx] - heatmaps[n, k, yy - 1, xx]
    return keypoints + np.sign(np.stack([dx, dy], axis=-1), dtype=np.float32) * 0.25


def gaussian_blur(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """mmpose's gaussian_blur for every map of every person at once (a new float32 array).

    mmpose blurs each map alone: zero-padded by (kernel - 1) / 2, cv2.GaussianBlur, cropped, rescaled to its
    original maximum. Here the padded maps are laid side by side in one wide image and blurred in one call (3x
    faster than a tall stack: long rows suit OpenCV's SIMD filters): a pixel reads at most the padding's width
    away, so it sees only its own map and zeros, and each filter lane does the same arithmetic wherever it sits,
    so each map's result is the same to the bit (tested against mmpose's per-map loop).
    """
    if kernel % 2 != 1:
        raise ValueError(f"the blur kernel must be odd, not {kernel}")
    n, k, height, width = heatmaps.shape
    border = (kernel - 1) // 2
    m = n * k
    if m == 0:
        return heatmaps.astype(np.float32, copy=True)
    padded = np.zeros((height + 2 * border, m, width + 2 * border), dtype=np.float32)
    padded[border:border + height, :, border:border + width] = heatmaps.reshape(m, height, width).transpose(1, 0, 2)
    blurred = cv2.GaussianBlur(padded.reshape(height + 2 * border, -1), (kernel, kernel), 0)
    maps = blurred.reshape(height + 2 * border, m, -1)[border:border + height, :, border:border + width]
    maps = np.ascontiguousarray(maps.transpose(1, 0, 2))
    origin_max = heatmaps.reshape(m, -1).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero map gives NaN, as in mmpose
        maps *= (origin_max / maps.reshape(m, -1).max(axis=1))[:, None, None]
    return maps.reshape(n, k, height, width)


def refine_dark(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int) -> np.ndarray:
    """refine_keypoints_dark: blur, log (floor 1e-10), then the Taylor offset -H^-1 g at the integer maximum,
    for joints with 1 < x < W-2 and 1 < y < H-2 whose Hessian is invertible. Only the 13 pixels each offset reads
    are taken from the blurred maps before the (elementwise) floor and log."""
    height, width = heatmaps.shape[2:]
    blurred = gaussian_blur(heatmaps, blur_kernel_size)
    x = keypoints[..., 0].astype(int)
    y = keypoints[..., 1].astype(int)
    inside = (x > 1) & (x < width - 2) & (y > 1) & (y < height - 2)
    refined = keypoints.copy()
    if not inside.any():
        return refined
    ni, ki = np.nonzero(inside)
    x, y = x[inside], y[inside]

    def at(dy: int, dx: int) -> np.ndarray:
        return np.log(np.maximum(blurred[ni, ki, y + dy, x + dx], 1e-10))

    centre = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    invertible = dxx * dyy - dxy**2 != 0
    hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)[invertible]  # (M', 2, 2)
    derivative = np.stack([dx, dy], -1)[invertible][..., None]  # (M', 2, 1)
    offset = (-np.linalg.inv(hessian) @ derivative)[..., 0]
    ni, ki = ni[invertible], ki[invertible]
    refined[ni, ki, :2] += offset
    return refined


def refine_dark_udp(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int) -> np.ndarray:
    """refine_keypoints_dark_udp: blur, clip to [1e-3, 50], log, then one Newton step on the edge-padded map
    (a float32-eps ridge on the Hessian's diagonal; float64 arithmetic, as mmpose's einsum).

    mmpose reads its 7 values through flat indices into one person's K edge-padded maps; a joint at (-1, -1) (its
    maximum <= 0) reads the previous map's last pixels, or for joint 0 wraps to the person's last map (a negative
    index). The same indices are formed here, wrapped per person, and turned back into (map, row, column) of the
    unpadded maps (edge padding = clamping), so only those values are clipped and logged.
    """
    n, k, height, width = heatmaps.shape
    blurred = gaussian_blur(heatmaps, blur_kernel_size)
    row, block = width + 2, (width + 2) * (height + 2)
    index = keypoints[..., 0] + 1 + (keypoints[..., 1] + 1) * row  # float32, as mmpose's (exact: below 2^24)
    index += block * np.arange(k)
    index = index.astype(int).reshape(n, k)
    person = np.arange(n)[:, None]

    def at(offset: int) -> np.ndarray:
        flat = (index + offset) % (block * k)  # numpy's negative indexing within the person's maps
        kk, rest = np.divmod(flat, block)
        r, c = np.divmod(rest, row)
        value = blurred[person, kk, np.clip(r - 1, 0, height - 1), np.clip(c - 1, 0, width - 1)]
        return np.log(np.clip(value, 1e-3, 50.0)).reshape(-1, 1)

    i_, ix1, iy1 = at(0), at(1), at(row)
    ix1y1, ix1_y1_ = at(row + 1), at(-row - 1)
    ix1_, iy1_ = at(-1), at(-2 - width)
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    derivative = np.concatenate([dx, dy], axis=1).reshape(n * k, 2, 1)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=1).reshape(n * k, 2, 2)
    hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
    step = np.einsum("imn,ink->imk", hessian, derivative).reshape(n, k, 2)
    refined = keypoints.copy()
    refined -= step
    return refined


def msra_to_input(keypoints: np.ndarray, input_wh: Sequence[int], heatmap_wh: Sequence[int]) -> np.ndarray:
    """MSRAHeatmap.decode's last step: heatmap pixels * (input / heatmap size) as float32."""
    scale_factor = (np.array(input_wh) / heatmap_wh).astype(np.float32)
    return keypoints * scale_factor


def udp_to_input(keypoints: np.ndarray, input_wh: Sequence[int], heatmap_wh: Sequence[int]) -> np.ndarray:
    """UDPHeatmap.decode's last step: heatmap pixels / [W - 1, H - 1] * input size (float64, as mmpose)."""
    width, height = heatmap_wh
    return keypoints / [width - 1, height - 1] * np.asarray(input_wh)
