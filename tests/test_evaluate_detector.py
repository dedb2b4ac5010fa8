"""`python -m model_export evaluate --detector PATH`: COCO keypoint AP with the person boxes a detector finds.

A synthetic YOLOX-layout detector (tests/detector_model.py) finds two known people in every image; the same
boxes written as a COCO detection-results file must give the identical evaluation, which proves the
evaluation used the detector's boxes and scores. Runs on ../shared/data/coco-mini and skips without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_export.__main__ import main
from model_export.data.dataset import load_coco
from model_export.evaluate import LocalRunner, evaluate, load_images
from posecore.detection import PersonDetector
from tests.detector_model import SCENE_INPUT_HW, build_scene_detector, letterbox_ratio
from tests.helpers import dataset_paths

pytest.importorskip("pycocotools", reason="pycocotools (the 'export' extra) is not installed")


@pytest.fixture(scope="module")
def detector_and_input_boxes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The scene detector and its two persons in letterboxed input pixels (x, y, w, h, score)."""
    path, scene = build_scene_detector(tmp_path_factory.mktemp("detector") / "people.onnx", (640, 480))
    input_boxes = scene.persons.copy()
    input_boxes[:, :4] *= scene.ratio
    return path, input_boxes


def expected_detections(annotations: Path, images: Path, input_boxes: np.ndarray) -> list[dict]:
    """COCO detection results of what the detector must find in each image: the input boxes / that image's
    letterbox ratio, clipped to the image."""
    results = []
    for image in load_images(load_coco(annotations), images):
        ratio = letterbox_ratio((image.width, image.height), SCENE_INPUT_HW)
        for x, y, w, h, score in input_boxes:
            x1, y1 = min(x / ratio, image.width), min(y / ratio, image.height)
            x2, y2 = min((x + w) / ratio, image.width), min((y + h) / ratio, image.height)
            results.append({"image_id": image.image_id, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score)})
    return results


def test_evaluate_uses_the_detector_s_boxes(tiny_onnx: Path, detector_and_input_boxes, tmp_path: Path) -> None:
    annotations, images = dataset_paths("coco-mini")
    detector_path, input_boxes = detector_and_input_boxes
    runner = LocalRunner.from_onnx(tiny_onnx, "cpu", 8, 1)
    detected = evaluate(annotations, images, runner, runner.card, detector=PersonDetector(detector_path))
    detections_file = tmp_path / "detections.json"
    detections_file.write_text(json.dumps(expected_detections(annotations, images, input_boxes)))
    from_file = evaluate(annotations, images, runner, runner.card, detections_file)
    assert detected.num_boxes == from_file.num_boxes == 2 * detected.num_images == 8
    assert detected.dropped_boxes == 0
    assert detected.stats == pytest.approx(from_file.stats, abs=1e-9)
    assert len(detected.results) == len(from_file.results) > 0
    for a, b in zip(detected.results, from_file.results, strict=True):
        assert a["image_id"] == b["image_id"] and a["score"] == pytest.approx(b["score"], rel=1e-5)
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1e-2)
    # Negative control: with the ground-truth boxes (12 persons) the evaluation differs.
    assert evaluate(annotations, images, runner, runner.card).num_boxes == 12


def test_evaluate_command_with_a_detector(tiny_onnx: Path, detector_and_input_boxes, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    annotations, images = dataset_paths("coco-mini")
    detector_path, _ = detector_and_input_boxes
    out = tmp_path / "ap.json"
    code = main(["evaluate", "--model", str(tiny_onnx), "--annotations", str(annotations), "--images", str(images),
                 "--detector", str(detector_path), "--detector-threshold", "0.1", "--threads", "1", "--no-progress",
                 "--json-out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"detector {detector_path}, score > 0.1" in printed and "12 person boxes" in printed  # + the faint one
    body = json.loads(out.read_text())
    assert body["num_boxes"] == 12 and body["detections"] is None
    assert body["detector"]["path"] == str(detector_path) and body["detector"]["score_threshold"] == 0.1
    assert body["detector"]["card"]["layout"] == "yolox"


def test_evaluate_command_refuses_a_missing_detector(tiny_onnx: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    annotations, images = dataset_paths("coco-mini")
    code = main(["evaluate", "--model", str(tiny_onnx), "--annotations", str(annotations), "--images", str(images),
                 "--detector", str(tmp_path / "absent.onnx"), "--no-progress"])
    assert code == 1
    assert f"detector file not found: {tmp_path / 'absent.onnx'}" in capsys.readouterr().err
