"""PersonDetector on synthetic ONNX detectors (tests/detector_model.py): the official YOLOX layout and the
mmdeploy end2end form, the card, bare files recognised from their shapes, and load errors naming the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from posecore.backend import ModelLoadError
from posecore.detection import DetectorCard, DetectorLoadError, DetectorSource, PersonDetector, letterbox
from posecore.detection.shapes import TensorInfo, infer_card
from posecore.detection.yolox import MAX_NMS_CANDIDATES, person_detections
from tests.detector_model import (
    SCENE_INPUT_HW,
    SyntheticObject,
    build_end2end_detector,
    build_scene_detector,
    build_yolox_detector,
    scene,
    yolox_head,
)

IMAGE_WH = (640, 427)


def blank(image_wh: tuple[int, int] = IMAGE_WH) -> np.ndarray:
    return np.full((image_wh[1], image_wh[0], 3), 90, np.uint8)


@pytest.fixture
def scene_detector(tmp_path: Path) -> tuple[PersonDetector, np.ndarray]:
    path, expected = build_scene_detector(tmp_path / "scene.onnx", IMAGE_WH)
    return PersonDetector(path), expected.persons


def test_finds_exactly_the_two_people_in_image_pixels(scene_detector) -> None:
    detector, persons = scene_detector
    boxes = detector.detect(blank())
    # the near-duplicate (NMS), the faint person (0.2 < 0.3) and the car (class 2) are gone
    assert boxes.dtype == np.float64 and boxes.shape == (2, 5)
    np.testing.assert_allclose(boxes[:, :4], persons[:, :4], atol=1e-3)
    np.testing.assert_allclose(boxes[:, 4], persons[:, 4], atol=1e-6)


def test_reads_the_card_and_its_thresholds(scene_detector) -> None:
    detector, _ = scene_detector
    assert detector.card_found and detector.warning is None and detector.layout == "yolox"
    assert detector.input_hw == SCENE_INPUT_HW and detector.score_threshold == 0.3 and detector.nms_iou == 0.45
    assert detector.max_batch_size == 1  # the official export's batch axis is fixed at 1
    detector.warmup()


def test_constructor_thresholds_override_the_card(tmp_path: Path) -> None:
    path, expected = build_scene_detector(tmp_path / "scene.onnx", IMAGE_WH)
    low = PersonDetector(path, score_threshold=0.1).detect(blank())
    assert len(low) == 3 and low[2, 4] == pytest.approx(0.2)  # the faint person now counts
    assert len(PersonDetector(path, nms_iou=0.95).detect(blank())) == 3  # the near-duplicate survives
    capped = PersonDetector(path, max_boxes=1).detect(blank())
    np.testing.assert_allclose(capped, expected.persons[:1], atol=1e-3)


def test_prepare_infer_boxes_split_the_work_as_a_batcher_needs(tmp_path: Path) -> None:
    path, expected = build_scene_detector(tmp_path / "scene.onnx", IMAGE_WH, batch=None)
    detector = PersonDetector(path, max_batch=4)
    assert detector.max_batch_size == 4
    inputs, ratio = detector.prepare(blank())
    reference, reference_ratio = letterbox(blank(), SCENE_INPUT_HW)
    np.testing.assert_array_equal(inputs, reference)
    assert ratio == reference_ratio == expected.ratio
    raw = detector.infer(np.stack([inputs] * 6))  # more than one padded run
    assert raw.shape == (6, 336, 85)
    for row in raw:
        np.testing.assert_allclose(detector.boxes(row, ratio, IMAGE_WH), expected.persons, atol=1e-3)


def test_boxes_are_clipped_and_tiny_ones_dropped(tmp_path: Path) -> None:
    head = yolox_head(SCENE_INPUT_HW, [
        SyntheticObject((-20.0, 10.0, 60.0, 140.0), 0.9, 0, 32),  # past the left and bottom edges
        SyntheticObject((100.0, 20.0, 100.5, 60.0), 0.8, 0, 8),  # 0.5 input px wide: 0.5 / ratio = 1 image px
    ])
    path = build_yolox_detector(tmp_path / "edge.onnx", head, SCENE_INPUT_HW)
    image_wh = (256, 200)  # ratio 0.5: the letterbox fills 128 x 100 of the 128 x 128 canvas
    boxes = PersonDetector(path).detect(blank(image_wh))
    np.testing.assert_allclose(boxes, [[0.0, 20.0, 120.0, 180.0, 0.9]], atol=1e-3)


def test_a_bare_onnx_file_is_recognised_with_a_warning(tmp_path: Path, caplog) -> None:
    path, expected = build_scene_detector(tmp_path / "bare.onnx", IMAGE_WH, with_card=False)
    with caplog.at_level(logging.WARNING):
        detector = PersonDetector(path)
    assert not detector.card_found and detector.warning and "bare.json" in detector.warning
    assert "no detector card" in caplog.text
    assert detector.card.layout == "yolox" and detector.card.class_names[0] == "person"
    assert len(detector.card.class_names) == 80
    np.testing.assert_allclose(detector.detect(blank()), expected.persons, atol=1e-3)


def end2end_outputs() -> tuple[np.ndarray, np.ndarray]:
    dets = np.array([[[10, 10, 60, 120, 0.9], [70, 20, 120, 110, 0.6], [0, 0, 50, 50, 0.95], [5, 5, 30, 30, 0.1],
                      [0, 0, 0, 0, 0.0]]], np.float32)
    labels = np.array([[0, 0, 2, 0, 0]], np.int64)
    return dets, labels


@pytest.mark.parametrize("with_card", [True, False])
def test_end2end_detector(tmp_path: Path, with_card: bool) -> None:
    dets, labels = end2end_outputs()
    card = DetectorCard(name="e2e", layout="end2end", input_size=SCENE_INPUT_HW, class_names=["person", "a", "car"])
    path = build_end2end_detector(tmp_path / "e2e.onnx", dets, labels, SCENE_INPUT_HW,
                                  card=card if with_card else None)
    detector = PersonDetector(path)
    assert detector.layout == "end2end" and detector.card_found is with_card
    image_wh = (256, 256)  # ratio 0.5
    boxes = detector.detect(blank(image_wh))
    np.testing.assert_allclose(boxes, [[20, 20, 100, 220, 0.9], [140, 40, 100, 180, 0.6]], atol=1e-4)
    raw = detector.infer(np.zeros((3, 3, *SCENE_INPUT_HW), np.float32))  # one row per image, sliceable
    assert raw.shape == (3, 5, 6)


def test_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "yolox_s.onnx"
    with pytest.raises(DetectorLoadError, match=r"detector file not found: .*nowhere/yolox_s.onnx"):
        PersonDetector(missing)
    assert issubclass(DetectorLoadError, ModelLoadError)  # start-up handles both alike


def test_broken_file_names_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX file")
    with pytest.raises(DetectorLoadError, match=r"broken\.onnx") as caught:
        PersonDetector(broken)
    assert "\n" not in str(caught.value)


def test_broken_or_mismatched_card_names_it(tmp_path: Path) -> None:
    path, _ = build_scene_detector(tmp_path / "scene.onnx", IMAGE_WH)
    card_file = path.with_suffix(".json")
    card_file.write_text("{not json")
    with pytest.raises(DetectorLoadError, match=r"invalid detector card .*scene.json"):
        PersonDetector(path)
    card = json.loads(DetectorCard(name="scene", layout="yolox", input_size=(640, 640)).model_dump_json())
    card_file.write_text(json.dumps(card))
    with pytest.raises(DetectorLoadError, match=r"scene.onnx: input images is \[1, 3, 128, 128\] but its card says"):
        PersonDetector(path)
    card_file.write_text(json.dumps({**card, "input_size": [128, 128], "class_names": ["person"]}))
    with pytest.raises(DetectorLoadError, match=r"card says yolox with 1 classes .* \(N, 336, 6\)"):
        PersonDetector(path)
    card_file.write_text(json.dumps({**card, "input_size": [128, 128], "layout": "end2end"}))
    with pytest.raises(DetectorLoadError, match="card says end2end"):
        PersonDetector(path)
    card_file.write_text(json.dumps({**card, "input_size": [128, 128], "format": "pose-detector-card/9"}))
    with pytest.raises(DetectorLoadError, match="format"):
        PersonDetector(path)


def test_card_json_form_is_the_fetch_command_s() -> None:
    card = DetectorCard(name="yolox_s", layout="yolox", input_size=(640, 640),
                        source=DetectorSource(url="https://example.org/yolox_s.onnx", sha256="ab" * 32))
    body = json.loads(card.model_dump_json())
    assert body == {"format": "pose-detector-card/1", "name": "yolox_s", "kind": "detector", "layout": "yolox",
                    "arch": None, "preprocessing": "yolox", "trained": True, "warning": None,
                    "input_size": [640, 640], "score_threshold": 0.3, "nms_iou": 0.45,
                    "class_names": body["class_names"], "person_class": 0,
                    "source": {"url": "https://example.org/yolox_s.onnx", "sha256": "ab" * 32,
                               "registry_name": None, "publisher": None, "box_ap": None, "checkpoint_layout": None,
                               "seed": None}}
    assert len(body["class_names"]) == 80 and body["class_names"][:3] == ["person", "bicycle", "car"]
    with pytest.raises(ValueError, match="person_class"):
        DetectorCard(name="x", layout="yolox", input_size=(64, 64), class_names=["car"], person_class=1)


def test_shapes_that_are_no_detector_are_refused() -> None:
    image = [TensorInfo("input", ("N", 3, 256, 192))]
    heatmaps = [TensorInfo("heatmaps", ("N", 17, 64, 48))]  # the pose model itself
    with pytest.raises(DetectorLoadError, match="not a recognised detector"):
        infer_card(Path("hrnet.onnx"), image, heatmaps)
    wrong_anchors = [TensorInfo("output", (1, 8400, 85))]  # a 640 head on a 256 x 192 input
    with pytest.raises(DetectorLoadError, match="not a recognised detector"):
        infer_card(Path("x.onnx"), image, wrong_anchors)
    dynamic = [TensorInfo("images", (1, 3, "H", "W"))]
    with pytest.raises(DetectorLoadError, match="dynamic size"):
        infer_card(Path("x.onnx"), dynamic, [TensorInfo("output", (1, 8400, 85))])
    assert infer_card(Path("y.onnx"), [TensorInfo("images", (1, 3, 640, 640))],
                      [TensorInfo("output", (1, 8400, 85))]).layout == "yolox"
    person_only = infer_card(Path("y.onnx"), [TensorInfo("images", (1, 3, 416, 416))],
                             [TensorInfo("output", (1, 3549, 6))])
    assert person_only.class_names == ["person"]


def test_scene_builder_encodes_what_it_promises() -> None:
    expected = scene((500, 375))
    assert expected.head.shape == (1, 336, 85)
    assert (expected.head[0, :, 4] > 0).sum() == 5  # five objects, every other row has objectness 0


def test_nms_candidates_are_capped_to_the_best() -> None:
    """A confused detector (thousands of candidates) costs a bounded NMS: only the best MAX_NMS_CANDIDATES enter."""
    head = np.zeros((8400, 85), np.float32)
    head[:, 2:4] = -4.0  # tiny boxes (stride / 55 px): none overlaps another, so NMS keeps every candidate
    head[:6400, 4] = np.linspace(0.31, 0.99, 6400)[::-1]  # 6,400 stride-8 candidates, best first
    head[:, 5] = 1.0
    dets = person_detections(head, 1.0, (640, 640), score_threshold=0.3, nms_iou=0.45)
    assert len(dets) == MAX_NMS_CANDIDATES
    np.testing.assert_array_equal(dets[:, 4], head[:MAX_NMS_CANDIDATES, 4])
