"""Heatmaps -> keypoints (argmax, quarter-pixel shift, inverse affine), flip test, person rescoring, OKS-NMS,
and the Gaussian training target. Pure numpy; the per-request paths are vectorised over persons and joints.

Each function reproduces its official HRNet counterpart (leoxiaobin/deep-high-resolution-net.pytorch:
core/inference.py, utils/transforms.py, dataset/coco.py, nms/nms.py, dataset/JointsDataset.py); the
docstrings say which official quirks are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from posecore.coco import OKS_SIGMAS
from posecore.geometry import heatmap_to_image


def get_max_preds(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) -> (coords float32 (N, K, 2) as x, y; maxvals float32 (N, K, 1)).

    Argmax over each flattened map, so the first maximum in row-major order wins a tie. A joint whose
    maximum is <= 0 (or NaN) gets (0, 0), as in the official code.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {heatmaps.shape}")
    n, k, height, width = heatmaps.shape
    flat = heatmaps.reshape(n, k, height * width)
    index = np.argmax(flat, axis=2)[..., None]  # (N, K, 1)
    maxvals = np.take_along_axis(flat, index, axis=2).astype(np.float32, copy=False)
    coords = np.concatenate([index % width, index // width], axis=2).astype(np.float32)
    coords[~(maxvals[..., 0] > 0)] = 0.0
    return coords, maxvals


def refine_quarter_pixel(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move each peak a quarter pixel towards its higher neighbour, along x and y separately (new array).

    As the official code: px = floor(x + 0.5) in float32, and only peaks with 1 < px < W-1 and 1 < py < H-1
    move (so px == 1 is left alone while px == W-2 is refined; a quirk we keep). A neighbour tie moves by 0.
    """
    height, width = heatmaps.shape[2:]
    coords = np.array(coords, dtype=np.float32, copy=True)
    px = np.floor(coords[..., 0] + np.float32(0.5)).astype(np.int64)
    py = np.floor(coords[..., 1] + np.float32(0.5)).astype(np.int64)
    inside = (px > 1) & (px < width - 1) & (py > 1) & (py < height - 1)
    if not inside.any():
        return coords
    ni, ki = np.nonzero(inside)
    x, y = px[inside], py[inside]
    dx = heatmaps[ni, ki, y, x + 1] - heatmaps[ni, ki, y, x - 1]  # gathers 4 values per joint, no copies
    dy = heatmaps[ni, ki, y + 1, x] - heatmaps[ni, ki, y - 1, x]
    coords[ni, ki] += np.sign(np.stack([dx, dy], axis=1)).astype(np.float32) * np.float32(0.25)
    return coords


def decode_heatmaps(
    heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) heatmaps -> (image keypoints float32 (N, K, 2), maxvals float32 (N, K, 1)).

    The official get_final_preds with TEST.POST_PROCESS=True: argmax, quarter-pixel shift, then the
    inverse heatmap affine of each person's center/scale.
    """
    coords, maxvals = get_max_preds(heatmaps)
    coords = refine_quarter_pixel(heatmaps, coords)
    height, width = heatmaps.shape[2:]
    preds = heatmap_to_image(coords, centers, scales, (width, height))
    return preds.astype(np.float32), maxvals


def flip_back(heatmaps_of_flipped: np.ndarray, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """Heatmaps of the mirrored crop -> heatmaps in the original frame: width reversed, left/right swapped.

    Returns a new C-contiguous array; unlike the official function it never writes into its input.
    """
    channels = _swapped_channels(heatmaps_of_flipped.shape[1], flip_pairs)
    return np.ascontiguousarray(heatmaps_of_flipped[:, channels, :, ::-1])


def flip_test_average(
    heatmaps: np.ndarray,
    heatmaps_of_flipped: np.ndarray,
    flip_pairs: Sequence[Sequence[int]],
    shift: bool = True,
) -> np.ndarray:
    """Official flip test: (heatmaps + flip_back(flipped), shifted one column right) * 0.5, float32.

    The shift (TEST.SHIFT_HEATMAP) compensates the pixel misalignment of the mirrored input; column 0
    keeps its own value, so columns 0 and 1 of the flipped-back map are equal, as in the official code.
    Flip-back and shift are one reversed copy, then the average is taken in place (same float32 result).
    """
    back = heatmaps_of_flipped[:, _swapped_channels(heatmaps_of_flipped.shape[1], flip_pairs)]
    out = np.empty_like(back)
    if shift:  # out[..., j] = flipped[..., W - j] for j >= 1; column 0 repeats column 1
        out[..., 1:] = back[..., :0:-1]
        out[..., 0] = back[..., -1]
    else:
        out[...] = back[..., ::-1]
    out += heatmaps
    out *= np.float32(0.5)
    return out


def _swapped_channels(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    channels = np.arange(num_joints)
    for left, right in flip_pairs:
        channels[left], channels[right] = right, left
    return channels


def rescore_person(box_score: float, maxvals: np.ndarray, threshold: float = 0.2) -> float:
    """Person score for evaluation: box score x mean of the keypoint scores above `threshold`.

    As the official COCO evaluate(): the comparison and the running sum are done in the scores' own dtype
    (float32 from the decoder), and with no keypoint above the threshold the mean is 0, so the score is 0.
    """
    scores = np.asarray(maxvals).reshape(-1)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    confident = scores[scores > scores.dtype.type(threshold)]
    if confident.size == 0:
        return 0.0
    mean = np.add.accumulate(confident)[-1] / scores.dtype.type(confident.size)  # sequential, as a loop
    return float(mean * np.float64(box_score))


def oks_iou(
    keypoints: np.ndarray, area: float, others: np.ndarray, other_areas: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """OKS of one person's keypoints (K, 2+) against M others (M, K, 2+), as the official NMS computes it.

    Every joint counts (no visibility filter), the scale is the mean of the two areas, and `sigmas` are
    the per-joint standard deviations (COCO's table / 10).
    """
    variances = (sigmas * 2) ** 2
    d2 = ((others[..., :2] - keypoints[None, :, :2]) ** 2).sum(axis=2)  # (M, K)
    mean_area = (area + other_areas) / 2 + np.spacing(1)
    e = d2 / variances / mean_area[:, None] / 2
    return np.exp(-e).mean(axis=1) if e.shape[1] else np.zeros(len(others))


def oks_nms(
    persons: Sequence[Mapping], threshold: float = 0.9, sigmas: Sequence[float] = OKS_SIGMAS
) -> list[int]:
    """Greedy OKS non-maximum suppression -> indices of the persons to keep, best score first.

    Each person is a mapping with 'keypoints' (K, 3), 'area' (the official code uses scale_w*200 *
    scale_h*200) and 'score'. A person is dropped when its OKS with a kept, higher-scored person is above
    `threshold`. `sigmas` are in COCO's units (0.26 for the nose), divided by 10 here as the official
    default. Ties in score are broken as the official argsort()[::-1] breaks them.
    """
    if len(persons) == 0:
        return []
    scores = np.array([p["score"] for p in persons], dtype=np.float64)
    keypoints = np.stack([np.asarray(p["keypoints"], dtype=np.float64).reshape(-1, 3) for p in persons])
    areas = np.array([p["area"] for p in persons], dtype=np.float64)
    sigma = np.asarray(sigmas, dtype=np.float64) / 10.0

    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = oks_iou(keypoints[best], areas[best], keypoints[rest], areas[rest], sigma)
        order = rest[overlap <= threshold]
    return keep


def gaussian_heatmaps(
    keypoints_hm: np.ndarray,
    heatmap_size_wh: Sequence[int],
    sigma: float = 2.0,
    visible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Training target: (K, 2) heatmap-space keypoints -> (target float32 (K, H, W), target_weight float32 (K,)).

    As the official generate_target (keypoints given already divided by the feature stride): an
    unnormalised Gaussian (peak 1) on the integer center mu = int(x + 0.5), cut to a square of radius
    3 sigma. `visible` (K,) defaults to all ones; invisible joints get an empty map and weight 0, and so do
    joints whose square lies off the map. Official quirks kept for training parity: int() truncates towards
    zero (x + 0.5 = -0.3 gives mu 0), and a square ending exactly at the left/top edge (br == 0) keeps
    weight 1 with an empty map.
    """
    width, height = int(heatmap_size_wh[0]), int(heatmap_size_wh[1])
    k = keypoints_hm.shape[0]
    weight = np.ones(k, dtype=np.float32)
    if visible is not None:
        weight[:] = np.minimum(np.asarray(visible, dtype=np.float32).reshape(k), 1)  # COCO v=2 counts as 1
    target = np.zeros((k, height, width), dtype=np.float32)
    radius = sigma * 3
    size = int(2 * radius + 1)
    grid = np.arange(size, dtype=np.float32)
    peak = size // 2
    kernel = np.exp(-((grid[None, :] - peak) ** 2 + (grid[:, None] - peak) ** 2) / (2 * sigma**2))

    for j in range(k):
        mu_x = int(float(keypoints_hm[j, 0]) + 0.5)  # float64, as the official joints
        mu_y = int(float(keypoints_hm[j, 1]) + 0.5)
        left, top = int(mu_x - radius), int(mu_y - radius)
        right, bottom = int(mu_x + radius + 1), int(mu_y + radius + 1)
        if left >= width or top >= height or right < 0 or bottom < 0:
            weight[j] = 0
            continue
        if weight[j] > 0.5:
            x0, x1 = max(0, left), min(right, width)
            y0, y1 = max(0, top), min(bottom, height)
            target[j, y0:y1, x0:x1] = kernel[y0 - top : y1 - top, x0 - left : x1 - left]
    return target, weight
