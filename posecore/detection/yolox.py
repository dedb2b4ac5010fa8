"""The official YOLOX ONNX head output (1, A, 5 + C) -> person boxes in image pixels.

Each of the A rows belongs to one cell of the stride-8, 16 and 32 grids (row-major, stride by stride, as
YOLOX's `demo_postprocess`): x, y are offsets in cells, w, h log-sizes in cells, then the objectness and the
C class probabilities (already sigmoid-ed by the exported head). Decoded: centre = (offset + cell) * stride,
size = exp(log-size) * stride. A person's score is objectness x person probability; NMS runs among persons
only (class-aware, as YOLOX's `multiclass_nms_class_aware` does for each class), in image pixels.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from posecore.detection.letterbox import Ratio, boxes_to_image
from posecore.detection.nms import nms_keep

STRIDES = (8, 16, 32)
# NMS is quadratic in its candidates: a trained detector at a 0.3 threshold gives tens, a random-init or confused
# one thousands (~0.15 s for 2,700). Only the best this many enter NMS, which bounds the worst case per image.
MAX_NMS_CANDIDATES = 1000


@lru_cache(maxsize=8)
def anchor_grid(input_hw: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """(A, 2) int64 cell x, y and (A, 1) int64 stride of every head row, in the head's row order."""
    cells, row_strides = [], []
    for stride in strides:
        rows, cols = input_hw[0] // stride, input_hw[1] // stride
        xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
        cells.append(np.stack((xs, ys), axis=2).reshape(-1, 2))
        row_strides.append(np.full((rows * cols, 1), stride))
    grid, stride_col = np.concatenate(cells), np.concatenate(row_strides)
    grid.flags.writeable = stride_col.flags.writeable = False  # cached: shared by every caller
    return grid, stride_col


def num_anchors(input_hw: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> int:
    return int(sum((input_hw[0] // s) * (input_hw[1] // s) for s in strides))


def _decode_rows(raw: np.ndarray, grid: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """Rows whose first four columns are cell offsets and log-sizes -> a float32 copy with cx, cy, w, h in input
    pixels there (float32 throughout, as the reference decode)."""
    decoded = np.array(raw, dtype=np.float32)
    decoded[:, :2] = (decoded[:, :2] + grid) * strides
    decoded[:, 2:4] = np.exp(decoded[:, 2:4]) * strides
    return decoded


def _grid_for(raw: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    grid, strides = anchor_grid((int(input_hw[0]), int(input_hw[1])))
    if raw.ndim != 2 or raw.shape[0] != len(grid) or raw.shape[1] < 6:
        raise ValueError(f"YOLOX head output for input {tuple(input_hw)} must be ({len(grid)}, 5 + C), "
                         f"got {raw.shape}")
    return grid, strides


def decode_head(raw: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """(A, 5 + C) raw head rows -> a new (A, 5 + C) array: cx, cy, w, h in input pixels, objectness, classes."""
    grid, strides = _grid_for(raw, input_hw)
    return _decode_rows(raw, grid, strides)


def person_detections(raw: np.ndarray, ratio: Ratio, input_hw: tuple[int, int], *, score_threshold: float,
                      nms_iou: float, person_class: int = 0) -> np.ndarray:
    """(A, 5 + C) raw head rows -> float32 (M, 5) x1, y1, x2, y2, score in image pixels, after NMS, best first.

    Not clipped: `nms.finish_boxes` does that. Scores strictly above `score_threshold` survive (the reference's
    `> score_thr`); only those rows are decoded.
    """
    grid, strides = _grid_for(raw, input_hw)
    if raw.shape[1] <= 5 + person_class:
        raise ValueError(f"YOLOX head rows have {raw.shape[1] - 5} classes, no person class {person_class}")
    scores = raw[:, 4].astype(np.float32) * raw[:, 5 + person_class].astype(np.float32)
    candidates = np.flatnonzero(scores > score_threshold)
    if len(candidates) > MAX_NMS_CANDIDATES:
        best = np.argsort(-scores[candidates], kind="stable")[:MAX_NMS_CANDIDATES]
        candidates = np.sort(candidates[best])  # back in head order, as without the cap
    decoded = _decode_rows(raw[candidates, :4], grid[candidates], strides[candidates])
    centres, sizes = decoded[:, :2], decoded[:, 2:4]
    boxes = boxes_to_image(np.concatenate([centres - sizes / 2.0, centres + sizes / 2.0], axis=1), ratio)
    scores = scores[candidates]
    keep = nms_keep(boxes, scores, nms_iou)
    return np.concatenate([boxes[keep], scores[keep, None]], axis=1)
