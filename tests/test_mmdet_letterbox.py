"""The "mmdet" letterbox against mmcv's own code run as mmdetection's YOLOX test pipeline runs it
(tests/fixtures/detection/mmdet_letterbox_reference.npz, made by make_mmdet_letterbox_fixtures.py), and the
per-axis inverse that mmdetection's scale factors imply."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from posecore.detection import boxes_to_image, letterbox
from posecore.detection.card import DetectorCard
from posecore.imaging import decode_image
from tests.helpers import require_shared

FIXTURE = Path(__file__).parent / "fixtures" / "detection" / "mmdet_letterbox_reference.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def test_synthetic_images_match_mmcv_exactly(reference: dict[str, np.ndarray]) -> None:
    cases = sorted({key.split("_")[0] for key in reference if key.startswith("syn")})
    assert len(cases) >= 5
    truncation_differs = 0
    for case in cases:
        rgb, size = reference[f"{case}_image_rgb"], int(reference[f"{case}_size"])
        canvas, ratio = letterbox(rgb, (size, size), "mmdet")
        np.testing.assert_array_equal(canvas, reference[f"{case}_padded_bgr"].transpose(2, 0, 1).astype(np.float32))
        assert ratio == tuple(reference[f"{case}_scale_factor"].tolist())
        official_yolox, _ = letterbox(rgb, (size, size), "yolox")
        truncation_differs += not np.array_equal(official_yolox, canvas)
    assert truncation_differs >= 3  # the two frameworks' letterboxes really differ on these sizes


def test_real_photos_match_mmcv_exactly(reference: dict[str, np.ndarray]) -> None:
    for name, size, scale, digest in zip(reference["photo_names"], reference["photo_sizes"],
                                         reference["photo_scale_factors"], reference["photo_input_sha256"],
                                         strict=True):
        rgb = decode_image(require_shared(f"data/{name}").read_bytes(), 1 << 30, 1 << 30)
        canvas, ratio = letterbox(rgb, (int(size), int(size)), "mmdet")
        assert ratio == tuple(scale.tolist()), name
        assert hashlib.sha256(canvas.tobytes()).hexdigest() == str(digest), f"{name} at {size}"


def test_per_axis_inverse_divides_x_and_y_by_their_own_scale() -> None:
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]], dtype=np.float32)
    back = boxes_to_image(boxes, (0.5, 0.25))
    np.testing.assert_array_equal(back, np.array([[20.0, 80.0, 60.0, 240.0]], dtype=np.float32))
    assert back.dtype == np.float32


def test_mmdet_needs_a_square_canvas() -> None:
    with pytest.raises(ValueError, match="square"):
        DetectorCard(name="x", layout="yolox", input_size=(320, 480), preprocessing="mmdet")
    with pytest.raises(ValueError, match="unknown detector preprocessing"):
        letterbox(np.zeros((8, 8, 3), np.uint8), (32, 32), "detectron")


@pytest.mark.parametrize("preprocessing", ["yolox", "mmdet"])
def test_the_card_selects_the_letterbox_and_its_inverse(preprocessing: str, tmp_path: Path) -> None:
    """201 x 100 at 128: YOLOX resizes to 128 x 63 (one r), mmdetection to 128 x 64 (y scale 0.64, not r)."""
    from posecore.detection import PersonDetector
    from tests.detector_model import SyntheticObject, build_yolox_detector, yolox_head

    input_hw = (128, 128)
    head = yolox_head(input_hw, [SyntheticObject((16.0, 20.0, 56.0, 60.0), 0.9, 0, 16)])
    card = DetectorCard(name="det", layout="yolox", input_size=input_hw, preprocessing=preprocessing)
    detector = PersonDetector(build_yolox_detector(tmp_path / "det.onnx", head, input_hw, card=card), provider="cpu")
    rgb = np.random.default_rng(3).integers(0, 256, (100, 201, 3), dtype=np.uint8)
    prepared, ratio = detector.prepare(rgb)
    expected_input, expected_ratio = letterbox(rgb, input_hw, preprocessing)
    np.testing.assert_array_equal(prepared, expected_input)
    assert ratio == expected_ratio
    rx, ry = (128 / 201, 64 / 100) if preprocessing == "mmdet" else (128 / 201, 128 / 201)
    (box,) = detector.detect(rgb)
    np.testing.assert_allclose(box[:4], [16 / rx, 20 / ry, 40 / rx, 40 / ry], rtol=1e-5)
