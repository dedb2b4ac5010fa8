"""mmpose 1.x's top-down crop and its way back: box -> center/scale -> warp matrix -> crop, and crop-input
coordinates -> image pixels. Pure numpy/OpenCV, vectorised over persons, each step in mmpose's own dtypes and
operation order so that the results are bit-identical to its functions (tests/fixtures/mmpose):

- box: the float32 xywh box as mmpose reads a detection result, bbox_xywh2xyxy, then bbox_xyxy2cs(padding=1.25):
  center = (x1 + x2) * 0.5, scale = (x2 - x1, y2 - y1) * 1.25, in pixels (no pixel_std), float32;
- TopdownAffine._fix_aspect_ratio: grown (after padding) to the input's w / h;
- get_warp_matrix (three float32 points, cv2.getAffineTransform) or, with UDP, get_udp_warp_matrix (a float32
  matrix with the (size - 1) / scale factors); cv2.warpAffine bilinear, zero border;
- back: keypoints / input_size * scale + center - 0.5 * scale (TopdownPoseEstimator.add_pred_to_datasample).

This differs from the official HRNet crop (posecore.geometry) only in float rounding, except UDP, which is a
different matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from posecore.coco import BOX_PADDING


def boxes_to_centers_scales(boxes_xywh: np.ndarray, input_wh: Sequence[int],
                            padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) x, y, w, h -> (centers float32 (N, 2), scales float32 (N, 2) in pixels, at the input's aspect)."""
    xywh = np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)  # bbox_xywh2xyxy, float32
    scales = (xyxy[:, 2:] - xyxy[:, :2]) * padding
    centers = (xyxy[:, 2:] + xyxy[:, :2]) * 0.5
    return centers, fix_aspect_ratio(scales, input_wh[0] / input_wh[1])


def fix_aspect_ratio(scales: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """TopdownAffine._fix_aspect_ratio: (N, 2) w, h grown to w / h == aspect_ratio (float32 in, float32 out)."""
    w, h = scales[:, :1], scales[:, 1:]
    return np.where(w > h * aspect_ratio, np.hstack([w, w / aspect_ratio]), np.hstack([h * aspect_ratio, h]))


def warp_matrix(center: np.ndarray, scale: np.ndarray, input_wh: Sequence[int]) -> np.ndarray:
    """get_warp_matrix(center, scale, rot=0, output_size=input_wh): (2, 3) float64, image -> crop."""
    out_w, out_h = input_wh
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([scale[0] * -0.5, 0.0])  # _rotate_point by 0 rad: the float64 point itself
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([out_w * -0.5, 0.0])
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def udp_warp_matrices(centers: np.ndarray, scales: np.ndarray, input_wh: Sequence[int]) -> np.ndarray:
    """get_udp_warp_matrix(center, scale, rot=0, output_size=input_wh) per person: (N, 2, 3) float32.

    The unbiased constraint: the crop's first and last pixel centers sit on the box's edges, a factor of
    (size - 1) / scale instead of size / scale. With rot = 0: cos = 1.0, sin = 0.0, kept in the formula so that
    the float32 sums round exactly as mmpose's do.
    """
    n = len(centers)
    input_size = centers * 2  # mmpose's name: twice the center, float32
    scale_x = (input_wh[0] - 1) / scales[:, 0]
    scale_y = (input_wh[1] - 1) / scales[:, 1]
    cos, sin = 1.0, 0.0
    warp = np.zeros((n, 2, 3), dtype=np.float32)
    warp[:, 0, 0] = cos * scale_x
    warp[:, 0, 1] = -sin * scale_x
    warp[:, 0, 2] = scale_x * (-0.5 * input_size[:, 0] * cos + 0.5 * input_size[:, 1] * sin + 0.5 * scales[:, 0])
    warp[:, 1, 0] = sin * scale_y
    warp[:, 1, 1] = cos * scale_y
    warp[:, 1, 2] = scale_y * (-0.5 * input_size[:, 0] * sin - 0.5 * input_size[:, 1] * cos + 0.5 * scales[:, 1])
    return warp


def warp_matrices(centers: np.ndarray, scales: np.ndarray, input_wh: Sequence[int], udp: bool) -> np.ndarray:
    """(N, 2, 3): the matrix TopdownAffine(use_udp=udp) warps each person's box with."""
    if udp:
        return udp_warp_matrices(centers, scales, input_wh)
    matrices = [warp_matrix(c, s, input_wh) for c, s in zip(centers, scales, strict=True)]
    return np.stack(matrices) if matrices else np.zeros((0, 2, 3))


def crop_persons(image: np.ndarray, matrices: np.ndarray, input_wh: Sequence[int]) -> np.ndarray:
    """uint8 (N, h, w, 3): cv2.warpAffine with each matrix, bilinear, black outside the image (TopdownAffine)."""
    size = (int(input_wh[0]), int(input_wh[1]))
    return np.stack([cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR) for m in matrices])


def input_to_image(keypoints: np.ndarray, centers: np.ndarray, scales: np.ndarray,
                   input_wh: Sequence[int]) -> np.ndarray:
    """(N, K, 2) crop-input coordinates -> image pixels, as add_pred_to_datasample (float64 arithmetic; the result
    keeps the keypoints' dtype: float32 after MSRA/DARK decoding, float64 after UDP's)."""
    size = np.asarray(input_wh)
    scale, center = scales[:, None, :], centers[:, None, :]
    mapped = keypoints / size * scale + center - 0.5 * scale
    return mapped.astype(keypoints.dtype)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """mmpose's _get_3rd_point: b + (a - b) rotated by 90 degrees anticlockwise (float32 in, float32 out)."""
    direction = a - b
    return b + np.r_[-direction[1], direction[0]]
