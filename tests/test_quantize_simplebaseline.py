"""INT8 on a model like the third-party one of issue 20: a MobileNetV2 SimpleBaseline (depthwise convolutions,
ReLU6 as Clip, BatchNormalization not folded, 3 ConvTranspose head, opset 13), trained briefly on the shared
photos (model_export/train_simplebaseline.py) and committed as tests/models/mobilenetv2_sb_coco_mini_128x96.onnx.

The suite quantizes it once with the default settings (only the crops/s measurement is replaced by a fixed
verdict: no test times anything) and checks the default target, the canonical rewrites, the head's own ranges,
the record, and that the keypoints the service answers move <= 1 px median.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fastapi.testclient import TestClient

from model_export.checkpoint import file_sha256
from model_export.quantize.quantizer import AgreementTooLow, QuantizeSettings, quantize_model
from model_export.quantize.search import Target
from model_export.simplebaseline import SimpleBaselineConfig, build_simplebaseline
from posecore.modelcard import ModelCard, card_path_for
from service.main import create_app
from service.settings import Settings
from tests.helpers import require_shared
from tests.test_quantize import speed_probe

MODEL = Path(__file__).parent / "models" / "mobilenetv2_sb_coco_mini_128x96.onnx"
SERVED_PHOTOS = 12


@pytest.fixture(scope="module")
def people() -> tuple[Path, Path]:
    folder = require_shared("data/people")
    return folder / "boxes.json", folder


@pytest.fixture(scope="module")
def committed() -> Path:
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} is not in this checkout")
    return MODEL


@pytest.fixture(scope="module")
def quantized(committed, people, tmp_path_factory):
    output = tmp_path_factory.mktemp("sb") / "sb.int8.onnx"
    return quantize_model(QuantizeSettings(model=committed, output=output, annotations=people[0],
                                           images=people[1], speed_probe=speed_probe(1.5)))


def test_the_backbone_is_torchvisions_mobilenet_v2():
    """torchvision's MobileNetV2 (width 1.0) has 3,504,872 parameters, 1,281,000 of them in the classifier:
    2,223,872 in `features`, named features.N.conv.M..., with the t/c/n/s settings of its paper."""
    model = build_simplebaseline(SimpleBaselineConfig(width_mult=1.0))
    assert sum(p.numel() for p in model.features.parameters()) == 2_223_872
    names = set(model.features.state_dict())
    assert {"0.0.weight", "0.1.running_var", "1.conv.0.0.weight", "1.conv.1.weight", "1.conv.2.weight",
            "2.conv.0.0.weight", "2.conv.3.running_mean", "18.0.weight"} <= names
    assert len(model.features) == 19 and model.features[18][0].out_channels == 1280
    x = torch.zeros(1, 3, 128, 96)
    assert model.eval()(x).shape == (1, 17, 32, 24)


def test_the_committed_model_is_exported_as_older_exporters_did(committed):
    model = onnx.load(str(committed))
    ops = Counter(node.op_type for node in model.graph.node)
    assert model.opset_import[0].version == 13
    assert ops["BatchNormalization"] == 55 and ops["Conv"] == 53 and ops["ConvTranspose"] == 3
    assert ops["Clip"] == 35 and ops["Constant"] > 0  # ReLU6 with its bounds in Constant nodes
    card = ModelCard.read(card_path_for(committed))
    assert card.trained and "TEST MODEL" in (card.warning or "") and card.onnx_sha256 == file_sha256(committed)
    assert card.arch.startswith("mobilenetv2_0.5_simplebaseline") and card.quantization is None


def test_defaults_reach_the_target_on_the_committed_model(quantized):
    a, q = quantized.agreement, quantized.card.quantization
    print(f"\nMobileNetV2 SimpleBaseline INT8: {a.summary()}; float layers {list(quantized.float_layers)}")
    assert Target().met(a) and a.median_px <= 0.5 and a.within_one_heatmap_px >= 0.85 and a.heatmap_sqnr_db >= 15
    assert q is not None and q.target == Target().as_dict() and q.agreement["crops"] == 128
    assert q.canonical == {"Constant -> initializer": 70, "BatchNormalization folded into Conv": 52,
                           "BatchNormalization folded into ConvTranspose": 3}
    assert q.head_ranges == f"minmax for the {len(quantized.ranges.head_tensors)} head tensors"
    assert q.speed["int8_over_parent"] == 1.5


def test_the_head_takes_minmax_ranges_and_the_report_compares_them(quantized):
    head = set(quantized.ranges.head_tensors)
    model = onnx.load(str(quantized.output))
    deconvs = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert len(deconvs) == 3 and all(n.output[0] in head for n in deconvs)
    report = json.loads(quantized.report.read_text())
    rows = {row["name"]: row for row in report["layers"]}
    assert {rows[n.name]["range"] for n in deconvs} == {"minmax"}
    assert Counter(row["range"] for row in report["layers"] if row["int8"])["percentile 99.999"] > 40
    compared = report["head_ranges"]
    assert compared["head_method"] == "minmax" and compared["other_method"] == "percentile 99.999"
    deconv_rows = [row for row in compared["layers"] if row["op_type"] == "ConvTranspose"]
    assert len(deconv_rows) == 3
    # the head's accumulated noise is lower with its own ranges (what the head_ranges section shows)
    assert np.mean([r["sqnr_db"] - r["sqnr_db_with_percentile_ranges"] for r in deconv_rows]) > 0


def served_keypoints(model: Path, photos: list[dict], folder: Path) -> np.ndarray:
    points = []
    with TestClient(create_app(Settings(model_path=model, max_boxes=20))) as client:
        for image in photos:
            response = client.post("/v1/pose", files={"image": ("p.jpg", (folder / image["file"]).read_bytes(),
                                                                "image/jpeg")},
                                   data={"boxes": json.dumps(image["person_boxes_xywh"][:20])})
            assert response.status_code == 200, response.text
            points += [[(k["x"], k["y"]) for k in person["keypoints"]] for person in response.json()["persons"]]
    return np.asarray(points, dtype=np.float64)


def test_served_keypoints_move_at_most_one_pixel_median(quantized, committed, people):
    photos = json.loads(people[0].read_text())["images"]
    chosen = photos[-SERVED_PHOTOS:]
    fp32, int8 = served_keypoints(committed, chosen, people[1]), served_keypoints(quantized.output, chosen, people[1])
    distance = np.linalg.norm(fp32 - int8, axis=2)
    print(f"\nserved keypoints, {distance.size} joints of {len(fp32)} persons: median {np.median(distance):.2f} px, "
          f"p95 {np.percentile(distance, 95):.2f} px")
    assert fp32.shape == int8.shape and len(fp32) >= SERVED_PHOTOS
    assert np.median(distance) <= 1.0


@pytest.mark.slow
def test_a_stricter_target_makes_the_search_keep_layers_in_float(committed, people, tmp_path):
    """The search on the real model: a target the defaults miss on 64 held-out crops, reached by keeping the
    layers that help most in float, each with what it bought; a target out of reach is refused, saying how close
    it got."""
    target = Target(max_median_px=0.5, min_within_one=0.88, min_sqnr_db=25.0)
    settings = QuantizeSettings(model=committed, output=tmp_path / "strict.onnx", annotations=people[0],
                                images=people[1], max_held_out_crops=64, target=target, float_budget=4,
                                search_top_k=2, speed_probe=speed_probe(1.5))
    result = quantize_model(settings)
    steps = result.card.quantization.search  # type: ignore[union-attr]
    print(f"\nsearch: {[(s['layer'], s['bought']) for s in steps]}")
    assert target.met(result.agreement) and 1 <= len(steps) <= 4
    assert all(s["layer"] in result.float_layers and "->" in str(s["bought"]) for s in steps)
    settings.target, settings.output = Target(min_sqnr_db=60.0), tmp_path / "unreachable.onnx"
    settings.float_budget = 1
    with pytest.raises(AgreementTooLow, match="closest it got") as refused:
        quantize_model(settings)
    assert "float budget of 1" in str(refused.value) and not settings.output.exists()
