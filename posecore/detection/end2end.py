"""The mmdeploy/rtmlib "end2end" detector form: NMS inside the graph, outputs `dets` (1, N, 5) and `labels` (1, N).

`dets` rows are x1, y1, x2, y2, score in letterboxed input pixels (the same YOLOX letterbox), `labels` the class
of each row; unused rows are padding with a score of 0. As rtmlib does, boxes are divided by the letterbox ratio
and kept when their score is strictly above the threshold; here also only rows of the person class.

Several outputs do not fit a batcher that slices one array per image, so `pack` stores both in one padded
(B, N, 6) float32 array (x1, y1, x2, y2, score, label) that `person_detections` reads back row by row.
"""

from __future__ import annotations

import numpy as np

from posecore.detection.letterbox import Ratio, boxes_to_image


def pack(dets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """dets (B, N, 5) + labels (B, N) -> float32 (B, N, 6)."""
    if dets.ndim != 3 or dets.shape[2] != 5 or labels.shape != dets.shape[:2]:
        raise ValueError(f"end2end outputs must be dets (B, N, 5) and labels (B, N), got {dets.shape} and "
                         f"{labels.shape}")
    return np.concatenate([dets.astype(np.float32), labels.astype(np.float32)[..., None]], axis=2)


def person_detections(packed: np.ndarray, ratio: Ratio, *, score_threshold: float,
                      person_class: int = 0) -> np.ndarray:
    """(N, 6) packed rows of one image -> float32 (M, 5) x1, y1, x2, y2, score in image pixels, best first."""
    rows = np.asarray(packed, dtype=np.float32).reshape(-1, 6)
    rows = rows[(rows[:, 4] > score_threshold) & (rows[:, 5] == person_class)]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    return np.concatenate([boxes_to_image(rows[:, :4], ratio), rows[:, 4:5]], axis=1)
