"""Person boxes from a caller: parsed and validated here, and only here.

Every front door (multipart form, raw body, batch JSON, the Open Inference Protocol's FP32 tensor) hands its raw
boxes to `parse_boxes`; the rules that need the image's size run in `fit_to_image` once the header is read.
Geometry (`posecore/geometry.py`) then only does math on boxes that passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from posecore.contract import BOX_FORMATS
from posecore.errors import PoseError
from posecore.geometry import xyxy_to_xywh

# Detector scores are probabilities or logits; a larger one is a mistake and would overflow the rescored
# person score (box score x mean keypoint score) to infinity.
MAX_BOX_SCORE = 1e6
_SHAPE_HINT = "boxes must be a list of [x, y, w, h] or [x, y, w, h, score] lists"


def parse_boxes(raw: Any, box_format: str = "xywh", max_boxes: int | None = None) -> np.ndarray | None:
    """Raw boxes (JSON lists or an (N, 4|5) array) -> float64 (N, 5) x, y, w, h, score; None stays None.

    A missing score is 1.0. Refused (PoseError): a shape other than rows of 4 or 5 numbers, strings or
    booleans posing as numbers, more than `max_boxes` rows (too_many_boxes, checked before anything costly),
    NaN/inf, width or height <= 0, a negative or absurd score.
    """
    if raw is None:
        return None
    if box_format not in BOX_FORMATS:
        raise PoseError("invalid_request", f"box_format must be 'xywh' or 'xyxy', not {str(box_format)[:20]!r}")
    count = _count(raw)
    if max_boxes is not None and count > max_boxes:
        raise PoseError("too_many_boxes", f"{count} person boxes were sent; at most {max_boxes} are allowed.")
    rows = _rows(raw)
    if box_format == "xyxy":
        rows = xyxy_to_xywh(rows)
    _refuse_first(rows, _value_checks(rows))
    return rows


def fit_to_image(rows: np.ndarray, image_wh: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Parsed (N, 5) boxes against the decoded image -> (xywh float64 (N, 4), scores float64 (N,)).

    Refused: boxes with no overlap with the image (the official code would crop black), and finite but absurd
    values beyond 100 times the image size (they overflow the float32 center/scale into NaN keypoints; no
    detector box is a hundred times larger than its image).
    """
    _refuse_first(rows, _image_checks(rows, image_wh))
    return np.ascontiguousarray(rows[:, :4]), np.ascontiguousarray(rows[:, 4])


def refused_rows(rows: np.ndarray, image_wh: Sequence[int]) -> np.ndarray:
    """(N,) mask of the (N, 5) xywh-score rows the service would refuse in this image, by the same rules, for
    callers that drop such boxes instead of refusing the image (evaluation, on a detector's boxes)."""
    checks = (*_value_checks(rows), *_image_checks(rows, image_wh))
    return np.logical_or.reduce([bad for bad, _ in checks])


Checks = tuple[tuple[np.ndarray, str], ...]  # (N,) mask of the failing rows, and what is wrong with them


def _value_checks(rows: np.ndarray) -> Checks:
    return (
        (~np.isfinite(rows).all(axis=1), "contains NaN or infinite values"),
        ((rows[:, 2] <= 0) | (rows[:, 3] <= 0), "has a width or height <= 0; both must be > 0"),
        (rows[:, 4] < 0, "has a negative score"),
        (rows[:, 4] > MAX_BOX_SCORE, f"has a score over {MAX_BOX_SCORE:g}"),
    )


def _image_checks(rows: np.ndarray, image_wh: Sequence[int]) -> Checks:
    image_w, image_h = float(image_wh[0]), float(image_wh[1])
    x, y, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    limit = 100.0 * max(image_w, image_h)
    return (
        ((np.abs(rows[:, :4]) > limit).any(axis=1), f"has a value beyond +-{limit:g}, 100 times the image size"),
        ((x >= image_w) | (y >= image_h) | (x + w <= 0) | (y + h <= 0),
         f"lies entirely outside the {image_w:g}x{image_h:g} image"),
    )


def whole_image_box(image_wh: Sequence[int]) -> np.ndarray:
    """No boxes given and no detector: the whole image is one person (score 1)."""
    return np.array([[0.0, 0.0, float(image_wh[0]), float(image_wh[1]), 1.0]])


def _count(raw: Any) -> int:
    if isinstance(raw, np.ndarray):
        return raw.shape[0] if raw.ndim == 2 else 0
    if not isinstance(raw, (list, tuple)):
        raise PoseError("invalid_boxes", _SHAPE_HINT)
    return len(raw)


def _rows(raw: Any) -> np.ndarray:
    """(N, 5) float64 rows x, y, w, h, score (score 1.0 where a row has 4 values)."""
    if isinstance(raw, np.ndarray):
        if raw.ndim != 2 or raw.shape[1] not in (4, 5) or not np.issubdtype(raw.dtype, np.number):
            raise PoseError("invalid_boxes", f"boxes must have shape (N, 4) or (N, 5) of numbers, got {raw.shape}.")
        out = np.ones((raw.shape[0], 5), dtype=np.float64)
        out[:, : raw.shape[1]] = raw
        return out
    out = np.ones((len(raw), 5), dtype=np.float64)
    for i, row in enumerate(raw):
        if not isinstance(row, (list, tuple)) or len(row) not in (4, 5):
            raise PoseError("invalid_boxes", f"box {i} must be [x, y, w, h] or [x, y, w, h, score].")
        # JSON's true/false and "1" are not numbers, whatever Python or numpy would make of them
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in row):
            raise PoseError("invalid_boxes", f"box {i} must hold numbers only.")
        try:
            out[i, : len(row)] = row
        except OverflowError:  # a JSON integer with hundreds of digits
            raise PoseError("invalid_boxes", f"box {i} has a value beyond a 64-bit float.") from None
    return out


def _refuse_first(rows: np.ndarray, checks: Checks) -> None:
    for bad, reason in checks:
        if bad.any():
            i = int(np.argmax(bad))
            values = ", ".join(f"{v:g}" for v in rows[i, :4])
            raise PoseError("invalid_boxes", f"box {i} [{values}] {reason}.")
