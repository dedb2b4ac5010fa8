"""The detector's letterbox, its inverse and the YOLOX decode + person NMS against fixtures made by YOLOX's and
rtmlib's own code (tests/fixtures/detection/README.md says how)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from posecore.detection import boxes_to_image, end2end, letterbox, yolox
from posecore.detection.nms import finish_boxes, nms_keep
from posecore.imaging import decode_image
from tests.helpers import require_shared

FIXTURE = Path(__file__).parent / "fixtures" / "detection" / "detection_reference.npz"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {name: data[name] for name in data.files}


def count(ref: dict[str, np.ndarray], prefix: str) -> int:
    return len({name.split("_")[0] for name in ref if name.startswith(prefix)})


def test_fixture_has_every_case(ref) -> None:
    assert count(ref, "lb") == 4 and count(ref, "head") == 3 and len(ref["photo_names"]) == 18


@pytest.mark.parametrize("case", range(4))
def test_letterbox_matches_yolox_preproc(ref, case: int) -> None:
    rgb, size = ref[f"lb{case}_image_rgb"], tuple(int(v) for v in ref[f"lb{case}_size_hw"])
    inputs, ratio = letterbox(rgb, size)
    assert inputs.dtype == np.float32 and inputs.shape == (3, *size)
    assert ratio == float(ref[f"lb{case}_ratio"])
    np.testing.assert_array_equal(inputs, ref[f"lb{case}_input"].astype(np.float32))


def test_letterbox_matches_yolox_preproc_on_photos(ref) -> None:
    data = require_shared("data")
    for name, size, ratio, rgb_hash, input_hash in zip(ref["photo_names"], ref["photo_sizes_hw"],
                                                       ref["photo_ratios"], ref["photo_rgb_sha256"],
                                                       ref["photo_input_sha256"], strict=True):
        rgb = decode_image((data / str(name)).read_bytes(), 1 << 30, 1 << 30)
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == rgb_hash, f"{name} decodes differently than when " \
            "the fixture was made (Pillow/libjpeg changed?): the letterbox check below would be meaningless"
        inputs, got_ratio = letterbox(rgb, (int(size[0]), int(size[1])))
        assert got_ratio == float(ratio), name
        assert hashlib.sha256(inputs.tobytes()).hexdigest() == input_hash, f"{name} at {size}"


def test_letterbox_refuses_what_is_not_an_rgb_image() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        letterbox(np.zeros((10, 10), np.uint8), (64, 64))
    with pytest.raises(ValueError, match="RGB uint8"):
        letterbox(np.zeros((10, 10, 3), np.float32), (64, 64))


def test_letterbox_of_an_extreme_aspect_ratio_keeps_one_pixel() -> None:
    inputs, ratio = letterbox(np.full((1, 4000, 3), 7, np.uint8), (64, 64))  # YOLOX would resize to height 0
    assert ratio == 64 / 4000
    assert (inputs[:, 0, :64] == 7).all() and (inputs[:, 1:, :] == 114).all()


@pytest.mark.parametrize("case", range(3))
def test_head_decode_matches_yolox_demo_postprocess(ref, case: int) -> None:
    hw = tuple(int(v) for v in ref[f"head{case}_input_hw"])
    raw = ref[f"head{case}_raw"]
    decoded = yolox.decode_head(raw[0], hw)
    np.testing.assert_array_equal(decoded[:, :5], ref[f"head{case}_decoded"])
    np.testing.assert_array_equal(decoded[:, 5:], raw[0, :, 5:])  # class columns pass through
    assert raw[0, 0, 0] == ref[f"head{case}_raw"][0, 0, 0]  # the caller's array is not decoded in place


@pytest.mark.parametrize("case", range(3))
def test_person_nms_matches_yolox_multiclass_nms(ref, case: int) -> None:
    hw = tuple(int(v) for v in ref[f"head{case}_input_hw"])
    dets = yolox.person_detections(ref[f"head{case}_raw"][0], float(ref[f"head{case}_ratio"]), hw,
                                   score_threshold=0.3, nms_iou=0.45)
    expected = ref[f"head{case}_person_dets"]
    assert len(expected) >= 3  # several people survive, many candidates were suppressed
    np.testing.assert_array_equal(dets, expected)


@pytest.mark.parametrize("case", range(3))
def test_whole_yolox_chain_matches_rtmlib(ref, case: int) -> None:
    hw = tuple(int(v) for v in ref[f"head{case}_input_hw"])
    dets = yolox.person_detections(ref[f"head{case}_raw"][0], float(ref[f"head{case}_ratio"]), hw,
                                   score_threshold=0.45, nms_iou=0.45)
    np.testing.assert_array_equal(dets[:, :4], ref[f"head{case}_rtmlib_person_boxes_045"])


def test_end2end_and_inverse_letterbox_match_rtmlib(ref) -> None:
    dets, ratio = ref["e2e_dets"], float(ref["e2e_ratio"])
    packed = end2end.pack(dets, np.zeros(dets.shape[:2], np.int64))
    got = end2end.person_detections(packed[0], ratio, score_threshold=0.3)
    np.testing.assert_array_equal(got[:, :4], ref["e2e_rtmlib_boxes"])
    assert (got[:, 4] > 0.3).all() and (np.diff(got[:, 4]) <= 0).all()
    np.testing.assert_array_equal(boxes_to_image(dets[0, :, :4], ratio)[: len(got)], ref["e2e_rtmlib_boxes"])


def test_end2end_keeps_only_the_person_class() -> None:
    dets = np.array([[[0, 0, 10, 10, 0.9], [5, 5, 20, 30, 0.8], [1, 1, 4, 4, 0.7]]], np.float32)
    labels = np.array([[2, 0, 0]])
    got = end2end.person_detections(end2end.pack(dets, labels)[0], 0.5, score_threshold=0.3)
    np.testing.assert_array_equal(got, np.array([[10, 10, 40, 60, 0.8], [2, 2, 8, 8, 0.7]], np.float32))


def test_nms_suppresses_above_the_iou_threshold_only() -> None:
    # inclusive-pixel IoU of [0,0,9,9] and [0,5,9,14]: 50 / 150 = 1/3; with [0,2,9,11]: 80 / 120 = 2/3
    boxes = np.array([[0, 0, 9, 9], [0, 5, 9, 14], [0, 2, 9, 11]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms_keep(boxes, scores, 0.45).tolist() == [0, 1]
    assert nms_keep(boxes, scores, 0.7).tolist() == [0, 1, 2]
    assert nms_keep(boxes, scores, 0.3).tolist() == [0]
    assert nms_keep(boxes[:0], scores[:0], 0.45).tolist() == []


def test_finish_clips_drops_tiny_and_caps() -> None:
    dets = np.array([
        [-10, 20, 50, 500, 0.9],  # reaches past the left and bottom border: clipped
        [10, 10, 40, 60, 0.8],
        [630, 10, 700, 60, 0.7],  # only 10 px inside: kept, 10 px wide
        [639, 10, 700, 60, 0.6],  # 1 px wide after clipping: dropped
        [700, 10, 800, 60, 0.5],  # wholly outside: dropped
        [20, 20, 20, 80, 0.4],  # zero width: dropped
        [np.nan, 0, 10, 10, 0.95],  # non-finite: dropped
    ])
    got = finish_boxes(dets, (640, 480), max_boxes=100, min_side=2.0)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [[0, 20, 50, 460, 0.9], [10, 10, 30, 50, 0.8], [630, 10, 10, 50, 0.7]])
    np.testing.assert_array_equal(finish_boxes(dets, (640, 480), max_boxes=2, min_side=2.0), got[:2])
    assert finish_boxes(dets, (640, 480), max_boxes=0, min_side=2.0).shape == (0, 5)
    assert finish_boxes(np.zeros((0, 5)), (640, 480), max_boxes=5, min_side=2.0).shape == (0, 5)
