"""The mmpose pipelines end to end: boxes -> crops, and heatmaps -> keypoints in image pixels.

    msra: mmpose crop, flip shift, get_heatmap_maximum, refine_keypoints, * input / heatmap size
    dark: mmpose crop, flip shift, get_heatmap_maximum, refine_keypoints_dark (blur k), * input / heatmap size
    udp:  UDP crop, no flip shift, get_heatmap_maximum, refine_keypoints_dark_udp (blur k), / (size - 1) * input
    then, for all three: keypoints / input size * scale + center - scale / 2.

The official pipeline stays in posecore.geometry / posecore.heatmaps; posecore.codec picks one per request.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from posecore.codecs import affine, refine
from posecore.codecs.spec import Pipeline


def crops(image: np.ndarray, boxes_xywh: np.ndarray, pipeline: Pipeline,
          input_wh: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 image and (N, 4) boxes -> (centers float32 (N, 2), scales float32 (N, 2) in pixels,
    crops uint8 (N, h, w, 3))."""
    centers, scales = affine.boxes_to_centers_scales(boxes_xywh, input_wh)
    matrices = affine.warp_matrices(centers, scales, input_wh, udp=pipeline.crop == "udp")
    return centers, scales, affine.crop_persons(image, matrices, input_wh)


def keypoints(heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray, pipeline: Pipeline,
              input_wh: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) heatmaps (flip-averaged already) -> (keypoints (N, K, 2) image pixels, scores float32 (N, K)).

    Where mmpose's refinement gives a non-finite point (only an all-zero heatmap does: its blur is rescaled by 0/0),
    the unrefined maximum is kept instead of answering NaN.
    """
    height, width = heatmaps.shape[2:]
    heatmap_wh = (width, height)
    maximum, scores = refine.heatmap_maximum(heatmaps)
    if pipeline.decoding == "msra":
        points = refine.msra_to_input(refine.refine_msra(maximum, heatmaps), input_wh, heatmap_wh)
    elif pipeline.decoding == "dark":
        refined = _finite_or(refine.refine_dark(maximum, heatmaps, pipeline.blur_kernel_size), maximum)
        points = refine.msra_to_input(refined, input_wh, heatmap_wh)
    elif pipeline.decoding == "udp":
        refined = _finite_or(refine.refine_dark_udp(maximum, heatmaps, pipeline.blur_kernel_size), maximum)
        points = refine.udp_to_input(refined, input_wh, heatmap_wh)
    else:
        raise ValueError(f"not an mmpose pipeline: {pipeline.decoding}")
    return affine.input_to_image(points, centers, scales, input_wh), scores


def _finite_or(refined: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(refined), refined, fallback).astype(refined.dtype)
