"""Our YOLOX against the official Megvii code (tests/fixtures/detection/yolox_reference.npz, made by
make_yolox_fixtures.py): the same seeded weights, saved in both published layouts, exported by our code, must
give the official torch outputs within 1e-4 on a batch of 2; a bare photo through the served detector must give
exactly the persons of YOLOX's demo postprocessing and NMS, boxes within 0.5 px."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient

from model_export.yolox.checkpoint import mmdet_to_megvii_key
from model_export.yolox.configs import get_yolox_config
from model_export.yolox.export import export_detector
from model_export.yolox.model import YOLOX
from posecore.detection import MIN_BOX_SIDE, PersonDetector
from posecore.imaging import decode_image
from service.main import create_app
from service.settings import Settings
from tests.helpers import require_shared
from tests.yolox_weights import seeded_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "detection" / "yolox_reference.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def seeded_tiny(seed: int, input_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    model = YOLOX(get_yolox_config("yolox_tiny").with_input_size(input_hw))
    return seeded_state_dict(model.state_dict(), seed)


def save_layouts(state_dict: dict[str, torch.Tensor], reference: dict[str, np.ndarray],
                 folder: Path) -> dict[str, Path]:
    """The weights as Megvii publishes them ({'model': ...}) and as mmdetection's converter renames them."""
    to_mmdet = dict(zip(reference["megvii_keys"].tolist(), reference["mmdet_keys"].tolist(), strict=True))
    paths = {"megvii": folder / "megvii.pth", "mmdet": folder / "mmdet.pth"}
    torch.save({"model": state_dict, "start_epoch": 300}, paths["megvii"])
    torch.save({"meta": {"epoch": 300, "CLASSES": ("person",)},
                "state_dict": {to_mmdet[k]: v for k, v in state_dict.items()}}, paths["mmdet"])
    return paths


def test_our_keys_are_the_official_ones_and_invert_the_converter(reference: dict[str, np.ndarray]) -> None:
    ours = list(YOLOX(get_yolox_config("yolox_tiny")).state_dict())
    assert sorted(ours) == sorted(reference["megvii_keys"].tolist())
    for megvii, mmdet in zip(reference["megvii_keys"].tolist(), reference["mmdet_keys"].tolist(), strict=True):
        assert mmdet_to_megvii_key(mmdet) == megvii, mmdet


@pytest.mark.slow
def test_both_layouts_export_to_the_official_outputs(reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    images = reference["torch_images"].astype(np.float32)
    input_hw = (images.shape[2], images.shape[3])
    paths = save_layouts(seeded_tiny(int(reference["seed"]), input_hw), reference, tmp_path)
    config = get_yolox_config("yolox_tiny").with_input_size(input_hw)
    for layout, checkpoint in paths.items():
        onnx_path = tmp_path / f"{layout}.onnx"
        card, _ = export_detector(config, onnx_path, checkpoint)
        assert card.source is not None and card.source.checkpoint_layout == layout
        assert card.preprocessing == {"megvii": "yolox", "mmdet": "mmdet"}[layout]
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        (output,) = session.run(["output"], {"images": images})  # batch of 2 through the dynamic axis
        assert output.shape == reference["torch_outputs"].shape
        assert np.abs(output - reference["torch_outputs"]).max() < 1e-4, layout


@pytest.mark.slow
def test_served_bare_photo_gives_the_demo_persons(reference: dict[str, np.ndarray], tmp_path: Path,
                                                  tiny_onnx: Path) -> None:
    photo = require_shared("data/" + str(reference["photo_name"]))
    rgb = decode_image(photo.read_bytes(), 1 << 30, 1 << 30)
    assert hashlib.sha256(rgb.tobytes()).hexdigest() == str(reference["photo_rgb_sha256"]), "decoder changed"
    paths = save_layouts(seeded_tiny(int(reference["seed"]), (416, 416)), reference, tmp_path)
    onnx_path = tmp_path / "tiny.onnx"
    export_detector("yolox_tiny", onnx_path, paths["megvii"])
    detector = PersonDetector(onnx_path, score_threshold=float(reference["photo_threshold"]), provider="cpu")
    inputs, _ = detector.prepare(rgb)
    assert hashlib.sha256(inputs.tobytes()).hexdigest() == str(reference["photo_input_sha256"])
    found = detector.detect(rgb)  # x, y, w, h, score; clipped to the image, thinner than MIN_BOX_SIDE dropped
    expected = reference["photo_person_dets"].astype(np.float64)
    height, width = rgb.shape[:2]
    x1, x2 = np.clip(expected[:, 0], 0, width), np.clip(expected[:, 2], 0, width)
    y1, y2 = np.clip(expected[:, 1], 0, height), np.clip(expected[:, 3], 0, height)
    expected_xywh = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
    inside = (expected_xywh[:, 2] >= MIN_BOX_SIDE) & (expected_xywh[:, 3] >= MIN_BOX_SIDE)  # the service's rule
    assert len(found) == inside.sum() >= 3
    assert np.abs(found[:, :4] - expected_xywh[inside]).max() <= 0.5
    assert np.abs(found[:, 4] - expected[inside, 4]).max() < 1e-4
    # and through the HTTP service: the photo without boxes
    settings = Settings(model_path=tiny_onnx, detector_path=onnx_path, provider="cpu",
                        detector_score_threshold=float(reference["photo_threshold"]))
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/pose", files={"image": ("photo.jpg", photo.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    served = np.array([[*p["box"], p["box_score"]] for p in response.json()["persons"]])
    assert len(served) == inside.sum()
    assert np.abs(served[:, :4] - expected_xywh[inside]).max() <= 0.5
