"""posecore.boxes: the one place where a caller's boxes are parsed and validated."""

from __future__ import annotations

import numpy as np
import pytest

from posecore.boxes import fit_to_image, parse_boxes
from posecore.errors import PoseError


def validate_boxes(raw, image_wh, max_boxes):
    """Both steps, as the serving path runs them: parse_boxes at admission, fit_to_image once the size is known."""
    rows = parse_boxes(raw, "xywh", max_boxes)
    assert rows is not None
    return fit_to_image(rows, image_wh)


def test_validate_boxes_accepts_scores_and_partly_outside_boxes():
    boxes, scores = validate_boxes([[10, 20, 30, 40], [-5, -5, 20, 20, 0.5]], (100, 80), max_boxes=4)
    assert boxes.dtype == np.float64 and boxes.shape == (2, 4) and boxes.flags.c_contiguous
    np.testing.assert_array_equal(scores, [1.0, 0.5])
    boxes, scores = validate_boxes(np.array([[1.0, 2, 3, 4, 0.25]]), (100, 80), max_boxes=1)
    np.testing.assert_array_equal(boxes, [[1, 2, 3, 4]])
    assert validate_boxes([], (100, 80), max_boxes=1)[0].shape == (0, 4)


@pytest.mark.parametrize(
    "boxes,code,words",
    [
        ([[float("nan"), 0, 10, 10]], "invalid_boxes", "NaN"),
        ([[0, 0, float("inf"), 10]], "invalid_boxes", "infinite"),
        ([[0, 0, 0, 10]], "invalid_boxes", "width or height"),
        ([[0, 0, 10, -3]], "invalid_boxes", "width or height"),
        ([[0, 0, 0, 0]], "invalid_boxes", "width or height"),
        ([[1000, 10, 50, 50]], "invalid_boxes", "outside"),
        ([[-500, -500, 100, 100]], "invalid_boxes", "outside"),
        ([[10, 10, 50, 50], [100, 0, 5, 5]], "invalid_boxes", "box 1"),  # x == image width
        ([[0, 0, 10]], "invalid_boxes", "[x, y, w, h]"),
        ([[0, 0, 10, 10, 0.5, 7]], "invalid_boxes", "[x, y, w, h]"),
        ([["a", 0, 10, 10]], "invalid_boxes", "numbers"),
        ([[0, 0, 10, 10, -0.1]], "invalid_boxes", "negative score"),
        (np.zeros((2, 3)), "invalid_boxes", "shape"),
        ([[0, 0, 10, 10]] * 5, "too_many_boxes", "at most 4"),
    ],
)
def test_validate_boxes_refusals(boxes, code, words):
    with pytest.raises(PoseError) as info:
        validate_boxes(boxes, (100, 80), max_boxes=4)
    assert info.value.code == code
    assert words in info.value.message


def test_absurdly_large_finite_boxes_are_refused_before_they_overflow_float32():
    with pytest.raises(PoseError) as error:
        validate_boxes([[10, 10, 1e300, 1e300]], (640, 480), 10)
    assert error.value.code == "invalid_boxes" and "100 times the image size" in error.value.message
    xywh, _ = validate_boxes([[-500, -500, 3000, 3000]], (640, 480), 10)  # large but plausible: kept
    assert xywh.shape == (1, 4)


@pytest.mark.parametrize("raw", [[["1", "2", "3", "4"]], [[True, 0, 10, 10]], [[0, 0, 10, False]], [[0, 0, 10, None]]])
def test_strings_and_booleans_are_not_numbers(raw):
    with pytest.raises(PoseError) as info:
        parse_boxes(raw)
    assert info.value.code == "invalid_boxes" and "numbers" in info.value.message


def test_too_many_boxes_is_checked_before_the_rows_are_read():
    # 101 rows that are not even numbers: the count alone decides, so the caller learns the limit first
    with pytest.raises(PoseError) as info:
        parse_boxes([["x"]] * 101, max_boxes=100)
    assert info.value.code == "too_many_boxes"


def test_xyxy_is_converted_and_then_validated():
    rows = parse_boxes([[10, 20, 110, 220, 0.9]], "xyxy")
    np.testing.assert_array_equal(rows, [[10, 20, 100, 200, 0.9]])
    with pytest.raises(PoseError) as info:
        parse_boxes([[10, 20, 5, 220]], "xyxy")  # x2 < x1: a negative width
    assert info.value.code == "invalid_boxes" and "width or height" in info.value.message
    with pytest.raises(PoseError) as info:
        parse_boxes([[0, 0, 1, 1]], "cxcywh")
    assert info.value.code == "invalid_request"


def test_arrays_from_a_tensor_front_door_follow_the_same_rules():
    rows = parse_boxes(np.array([[1, 2, 3, 4]], np.float32))
    assert rows is not None and rows.shape == (1, 5) and rows[0, 4] == 1.0
    with pytest.raises(PoseError):
        parse_boxes(np.array([[1, 2, 0, 4]], np.float32))
    assert parse_boxes(None) is None
    assert parse_boxes([]).shape == (0, 5)


def test_fit_to_image_needs_the_image_size():
    rows = parse_boxes([[1000, 10, 50, 50]])
    assert rows is not None
    with pytest.raises(PoseError) as info:
        fit_to_image(rows, (640, 480))
    assert "outside" in info.value.message
