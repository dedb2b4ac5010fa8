"""Greedy non-maximum suppression and the last steps every detector layout shares (clip, drop tiny, cap)."""

from __future__ import annotations

import numpy as np


def nms_keep(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first.

    Same arithmetic as the YOLOX/rtmlib numpy demo NMS (so results match them exactly): areas in the legacy
    inclusive-pixel convention (x2 - x1 + 1), a box is suppressed when its IoU with a kept box exceeds the
    threshold, candidates visited in `argsort()[::-1]` order.
    """
    x1, y1, x2, y2 = boxes_xyxy[:, 0], boxes_xyxy[:, 1], boxes_xyxy[:, 2], boxes_xyxy[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = inter_w * inter_h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def finish_boxes(dets_xyxy: np.ndarray, image_wh: tuple[int, int], max_boxes: int,
                 min_side: float) -> np.ndarray:
    """(M, 5) x1, y1, x2, y2, score in image pixels, best first -> float64 (K, 5) x, y, w, h, score.

    Clipped to the image (a detector's box may reach past the border; the pose crop must not be centred
    outside it), boxes narrower or shorter than `min_side` pixels after clipping dropped (nobody's pose fits
    there, and the pose codec refuses empty boxes), at most `max_boxes` kept (the best).
    """
    dets = np.asarray(dets_xyxy, dtype=np.float64).reshape(-1, 5)
    width, height = image_wh
    x1 = np.clip(dets[:, 0], 0, width)
    y1 = np.clip(dets[:, 1], 0, height)
    x2 = np.clip(dets[:, 2], 0, width)
    y2 = np.clip(dets[:, 3], 0, height)
    boxes = np.stack([x1, y1, x2 - x1, y2 - y1, dets[:, 4]], axis=1)
    usable = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] >= min_side) & (boxes[:, 3] >= min_side)
    boxes = boxes[usable]
    order = np.argsort(-boxes[:, 4], kind="stable")  # already best first after NMS; stable keeps that order
    return boxes[order[:max(0, max_boxes)]]
