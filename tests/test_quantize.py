"""INT8 quantization (`python -m model_export quantize`): the QDQ graph, what stays float, the card, the per-layer
report, the agreement check (and that it catches a broken quantization), awkward inputs (fixed batch, no card, old
opset), and the service serving the result as int8.

The structural tests calibrate on synthetic photos written to a temporary folder (no ../shared needed); the
accuracy tests use the committed trained test model and the real photos of ../shared/data/people.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fastapi.testclient import TestClient

from model_export.__main__ import main
from model_export.checkpoint import file_sha256
from model_export.configs import get_config
from model_export.export import export_onnx
from model_export.hrnet import build_hrnet
from model_export.quantize.agreement import compare_heatmaps, run_model
from model_export.quantize.calibration import make_crops, read_person_boxes, split_images
from model_export.quantize.graph import ModelNotQuantizable, upgrade_opset
from model_export.quantize.quantizer import AgreementTooLow, NotFaster, QuantizeSettings, quantize_model
from model_export.quantize.search import Target
from model_export.quantize.speed import NO_GAIN, SpeedComparison, measure_speed
from model_export.train_setup import config_with_input
from posecore.backend import OrtBackend
from posecore.modelcard import ModelCard, card_path_for, read_card
from service.main import create_app
from service.settings import Settings
from tests.helpers import jpeg_bytes, require_shared

SMALL_INPUT = (128, 96)  # the tiny net at a quarter of its pixels: quantizing it takes seconds
TEST_MODELS = Path(__file__).parent / "models"
TRAINED = TEST_MODELS / "tiny_coco_mini_128x96.onnx"  # trained on coco-mini + coco8-pose (see README)


def small_config():
    return config_with_input(get_config("tiny"), SMALL_INPUT, None)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """Eight synthetic photos with two person boxes each, as COCO annotations: (annotations, image folder)."""
    folder = tmp_path_factory.mktemp("photos")
    images, annotations = [], []
    for i in range(8):
        (folder / f"p{i}.jpg").write_bytes(jpeg_bytes(200, 260, seed=i))
        images.append({"id": i, "file_name": f"p{i}.jpg", "width": 200, "height": 260})
        for j, box in enumerate(([10, 20, 80, 200], [100 + i, 30, 90, 210])):
            annotations.append({"id": 10 * i + j, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": box})
    annotations.append({"id": 999, "image_id": 0, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 200, 260]})
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path, folder


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fp32") / "tiny.onnx"
    export_onnx(small_config(), path, seed=0, check_batches=(1,))
    return path


def speed_probe(ratio: float):
    """A stand-in for the crops/s measurement that reports `ratio` (tests never time anything)."""
    def probe(parent: Path, int8: Path, batch: int, crops: np.ndarray) -> SpeedComparison:
        return SpeedComparison(100.0, 100.0 * ratio, batch, 0, 2, 1)
    return probe


# An untrained net's heatmaps are flat, so its argmax moves with any noise: the structural tests hold it to the
# heatmap SQNR only (the trained test models are held to the full default target).
SQNR_ONLY = Target(max_median_px=1e9, min_within_one=0.0, min_sqnr_db=15.0)


def settings_for(model: Path, output: Path, photos: tuple[Path, Path], **changes) -> QuantizeSettings:
    values = dict(model=model, output=output, annotations=photos[0], images=photos[1], max_crops=8,
                  max_held_out_crops=4, held_out_fraction=0.25, target=SQNR_ONLY, float_budget=1, search_top_k=1,
                  speed_probe=speed_probe(2.0))
    return QuantizeSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def quantized(fp32_model, photos, tmp_path_factory):
    output = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    return quantize_model(settings_for(fp32_model, output, photos))


def conv_weight_is_int8(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    producers = {out: n for n in model.graph.node for out in n.output}
    weight = producers.get(node.input[1])
    return weight is not None and weight.op_type == "DequantizeLinear"


def test_the_graph_is_qdq_with_int8_convolutions_and_the_first_and_last_in_float(quantized):
    model = onnx.load(str(quantized.output))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    int8 = [n.name for n in convs if conv_weight_is_int8(model, n)]
    first, last = convs[0], next(n for n in convs if n.output[0] == model.graph.output[0].name)
    assert not conv_weight_is_int8(model, first) and not conv_weight_is_int8(model, last)
    assert first.name in quantized.float_layers and last.name in quantized.float_layers
    assert len(int8) == len(convs) - len(quantized.float_layers)
    # the weights really are int8 and per output channel
    initializers = {i.name: i for i in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    dq = producers[convs[1].input[1]]
    assert initializers[dq.input[0]].data_type == onnx.TensorProto.INT8
    assert len(onnx.numpy_helper.to_array(initializers[dq.input[1]])) == onnx.numpy_helper.to_array(
        initializers[dq.input[0]]).shape[0]
    assert {p.key: p.value for p in model.metadata_props}["hrnet_pose.precision"] == "int8"


def test_the_card_records_the_quantization(quantized, fp32_model):
    card = ModelCard.read(card_path_for(quantized.output))
    parent = ModelCard.read(card_path_for(fp32_model))
    q = card.quantization
    assert card.precision == "int8" and parent.precision == "fp32"
    assert q is not None and q.method == "percentile 99.999" and q.per_channel and q.format == "QDQ"
    assert q.parent_sha256 == file_sha256(fp32_model) and q.parent_onnx == "tiny.onnx" and q.parent_card_found
    assert card.onnx_sha256 == file_sha256(quantized.output)
    assert card.trained == parent.trained and card.warning == parent.warning  # an untrained parent stays flagged
    assert set(q.float_layers) == set(quantized.float_layers) and len(q.float_layers) >= 2
    assert q.calibration["crops"] == 8 and q.held_out["crops"] == 4 and q.calibration["photos"] == 6
    assert q.agreement["heatmap_sqnr_db"] == pytest.approx(quantized.agreement.heatmap_sqnr_db, abs=1e-3)
    assert {"median_px", "p95_px", "within_one_heatmap_px"} <= set(q.agreement)


def test_the_layer_report_has_an_sqnr_for_every_int8_convolution(quantized):
    report = json.loads(quantized.report.read_text())
    model = onnx.load(str(quantized.output))
    int8_convs = {n.name for n in model.graph.node if n.op_type == "Conv" and conv_weight_is_int8(model, n)}
    rows = {row["name"]: row for row in report["layers"]}
    assert int8_convs <= {name for name, row in rows.items() if row["int8"]}
    for name in int8_convs:
        assert 5 < rows[name]["sqnr_db"] < 100 and rows[name]["added_db"] >= rows[name]["sqnr_db"] - 1e-6
    for name in quantized.float_layers:
        assert not rows[name]["int8"]
    assert report["agreement"]["crops"] == 4


def test_agreement_is_measured_and_a_broken_scale_scores_worse(quantized, fp32_model, photos, tmp_path):
    good = quantized.agreement
    assert good.joints == 4 * 17 and good.heatmap_sqnr_db > 15
    assert 0 <= good.within_one_heatmap_px <= 1 and good.median_px <= good.p95_px <= good.max_px
    # Corrupt the scale of the activation the heatmap conv reads: 30x coarser steps there.
    model = onnx.load(str(quantized.output))
    producers = {out: n for n in model.graph.node for out in n.output}
    heatmap_conv = producers[model.graph.output[0].name]
    scale_name = producers[heatmap_conv.input[0]].input[1]
    scale = next(i for i in model.graph.initializer if i.name == scale_name)
    scale.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(scale) * 30, scale_name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    _, held_out = split_images(read_person_boxes(*photos), 0.25, seed=0)
    crops = make_crops(held_out, ModelCard.read(card_path_for(fp32_model)), 4, seed=0)
    reference = run_model(fp32_model, crops.inputs)
    again = compare_heatmaps(reference, run_model(quantized.output, crops.inputs), crops)
    bad = compare_heatmaps(reference, run_model(broken, crops.inputs), crops)
    assert again.heatmap_sqnr_db == pytest.approx(good.heatmap_sqnr_db, abs=1e-6)
    assert bad.heatmap_sqnr_db < good.heatmap_sqnr_db - 6


def test_float_ends_can_be_quantized_for_comparison(fp32_model, photos, tmp_path):
    result = quantize_model(settings_for(fp32_model, tmp_path / "all.onnx", photos, float_ends=False,
                                         search=False))
    model = onnx.load(str(result.output))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(conv_weight_is_int8(model, n) for n in convs) and result.float_layers == {}


def test_not_faster_is_said_in_one_line_and_not_written_unless_allowed(fp32_model, photos, tmp_path):
    output = tmp_path / "slow.onnx"
    with pytest.raises(NotFaster, match=f"^{NO_GAIN}"):
        quantize_model(settings_for(fp32_model, output, photos, speed_probe=speed_probe(0.8)))
    assert not output.exists() and not card_path_for(output).exists()
    written = quantize_model(settings_for(fp32_model, output, photos, speed_probe=speed_probe(0.8),
                                          allow_slower=True))
    speed = written.card.quantization.speed  # type: ignore[union-attr]
    assert output.is_file() and speed["int8_over_parent"] == 0.8 and speed["parent_crops_per_s"] == 100.0
    assert json.loads(written.report.read_text())["speed"]["int8_over_parent"] == 0.8


def test_the_speed_measurement_runs_both_models_alike(quantized, fp32_model):
    crops = np.random.default_rng(0).standard_normal((3, 3, *SMALL_INPUT)).astype(np.float32)
    speed = measure_speed(fp32_model, quantized.output, 4, crops, rounds=1, slice_s=0.01)
    assert speed.batch == 4 and speed.rounds == 1 and speed.parent_crops_per_s > 0 and speed.int8_crops_per_s > 0
    assert speed.ratio == pytest.approx(speed.int8_crops_per_s / speed.parent_crops_per_s)
    assert "crops/s" in speed.summary()


def test_low_agreement_is_refused_and_nothing_is_written(fp32_model, photos, tmp_path, capsys):
    output = tmp_path / "refused.onnx"
    with pytest.raises(AgreementTooLow, match="closest it got: heatmap SQNR") as refused:
        quantize_model(settings_for(fp32_model, output, photos, target=Target(min_sqnr_db=200), float_budget=1))
    assert "float budget of 1" in str(refused.value) and "heatmap SQNR" in str(refused.value).split("short:")[1]
    assert not output.exists() and not card_path_for(output).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".quantize-")]  # no leftovers


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter, as export.py uses it
def test_fixed_batch_model_without_a_card(photos, tmp_path):
    """A bare ONNX file with batch fixed at 2, as some exporters write them."""
    model = build_hrnet(small_config(), seed=0).eval()
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (torch.zeros(2, 3, *SMALL_INPUT),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["heatmaps"])
    result = quantize_model(settings_for(path, tmp_path / "fixed.int8.onnx", photos, max_crops=7))
    backend = OrtBackend(result.output, provider="cpu")
    assert backend.batch_sizes == [2]
    assert backend.infer(np.zeros((3, 3, *SMALL_INPUT), np.float32)).shape == (3, 17, 32, 24)
    card = result.card
    assert card.quantization is not None and not card.quantization.parent_card_found
    assert card.quantization.calibration["batch_size"] == 2 and "No model card" in (card.warning or "")
    assert ModelCard.read(card_path_for(result.output)).precision == "int8"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_old_opset_is_upgraded_and_checked(photos, tmp_path):
    model = build_hrnet(small_config(), seed=0).eval()
    path = tmp_path / "opset11.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, *SMALL_INPUT),), str(path), dynamo=False, opset_version=11,
                      input_names=["input"], output_names=["heatmaps"],
                      dynamic_axes={"input": {0: "batch"}, "heatmaps": {0: "batch"}})
    result = quantize_model(settings_for(path, tmp_path / "opset11.int8.onnx", photos, search=False))
    assert result.card.opset is not None and result.card.opset >= 13
    assert result.agreement.heatmap_sqnr_db > 15


def test_a_model_too_old_to_upgrade_is_refused_clearly(fp32_model, photos, tmp_path, capsys):
    model = onnx.load(str(fp32_model))
    model.opset_import[0].version = 6
    old = tmp_path / "opset6.onnx"
    onnx.save(model, str(old))
    with pytest.raises(ModelNotQuantizable, match="opset 6"):
        upgrade_opset(old, tmp_path)
    code = main(["quantize", "--model", str(old), "--output", str(tmp_path / "x.onnx"),
                 "--calibration-annotations", str(photos[0]), "--calibration-images", str(photos[1])])
    assert code == 2 and "opset 6" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_an_already_quantized_model_or_overwriting_the_parent_is_refused(quantized, fp32_model, photos, tmp_path):
    with pytest.raises(ModelNotQuantizable, match="already quantized"):
        upgrade_opset(quantized.output, tmp_path)
    with pytest.raises(ValueError, match=r"new \.onnx path"):
        quantize_model(settings_for(fp32_model, fp32_model, photos))


def test_the_service_serves_the_int8_model_and_says_so(quantized, fp32_model):
    for path, precision in ((quantized.output, "int8"), (fp32_model, "fp32")):
        app = create_app(Settings(model_path=path, max_boxes=5))
        with TestClient(app) as client:
            body = client.get("/v1/model").json()
            assert body["precision"] == precision
            assert (body["card"]["quantization"] is not None) == (precision == "int8")
            response = client.post("/v1/pose", files={"image": ("p.jpg", jpeg_bytes(), "image/jpeg")},
                                   data={"boxes": json.dumps([[10, 20, 60, 120]])})
            assert response.status_code == 200, response.text
            assert len(response.json()["persons"][0]["keypoints"]) == 17


def test_cli_writes_model_card_and_report(fp32_model, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("model_export.quantize.quantizer.measure_speed", speed_probe(0.9))
    output = tmp_path / "cli.int8.onnx"
    code = main(["quantize", "--model", str(fp32_model), "--output", str(output), "--calibration-annotations",
                 str(photos[0]), "--calibration-images", str(photos[1]), "--max-crops", "8", "--max-held-out-crops",
                 "4", "--method", "minmax", "--no-search", "--target-median-px", "1e9", "--target-within-one", "0",
                 "--allow-slower"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "heatmap SQNR" in printed and "kept in float" in printed and NO_GAIN in printed  # written: allowed
    assert ModelCard.read(card_path_for(output)).quantization.method == "minmax"  # type: ignore[union-attr]
    assert (tmp_path / "cli.int8.layers.json").is_file()


# ---- the trained test model on real photos ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def people() -> tuple[Path, Path]:
    folder = require_shared("data/people")
    return folder / "boxes.json", folder


def test_committed_test_model_card_matches_its_files():
    if not TRAINED.is_file():
        pytest.skip(f"{TRAINED} is not in this checkout")
    int8 = TRAINED.with_name(TRAINED.stem + ".int8.onnx")
    card = ModelCard.read(card_path_for(int8))
    assert card.trained and "TEST MODEL" in (card.warning or "")
    assert card.quantization is not None and card.quantization.parent_sha256 == file_sha256(TRAINED)
    assert card.onnx_sha256 == file_sha256(int8)
    backend = OrtBackend(int8, provider="cpu")
    assert read_card(int8, backend)[0].precision == "int8"


def test_a_bare_int8_model_without_its_card_is_served_as_int8(tmp_path):
    int8 = TRAINED.with_name(TRAINED.stem + ".int8.onnx")
    if not int8.is_file():
        pytest.skip(f"{int8} is not in this checkout")
    bare_int8, bare_fp32 = tmp_path / "int8" / int8.name, tmp_path / "fp32" / TRAINED.name
    for source, copy in ((int8, bare_int8), (TRAINED, bare_fp32)):  # the .onnx alone, no card beside it
        copy.parent.mkdir()
        copy.write_bytes(source.read_bytes())
    card, found = read_card(bare_int8, OrtBackend(bare_int8, provider="cpu"))
    assert not found and card.precision == "int8"
    assert card.quantization is not None and card.quantization.format == "QDQ"
    assert card.quantization.parent_sha256 == "unknown"  # what the graph cannot tell is not invented
    assert read_card(bare_fp32, OrtBackend(bare_fp32, provider="cpu"))[0].precision == "fp32"
    with TestClient(create_app(Settings(model_path=bare_int8, max_boxes=5))) as client:
        assert client.get("/v1/model").json()["precision"] == "int8"


def test_percentile_beats_minmax_on_few_crops_of_a_trained_model(people, tmp_path):
    """The issue's point: MinMax lets rare outliers set the ranges. On a trained model's real crops, percentile
    calibration agrees better with float32 than MinMax on a tiny calibration set."""
    if not TRAINED.is_file():
        pytest.skip(f"{TRAINED} is not in this checkout")
    common = dict(model=TRAINED, annotations=people[0], images=people[1], max_held_out_crops=32, search=False,
                  accept_low_agreement=True, head_method=None, speed_probe=speed_probe(2.0))
    good = quantize_model(QuantizeSettings(output=tmp_path / "p.onnx", max_crops=64, **common))  # type: ignore[arg-type]
    naive = quantize_model(QuantizeSettings(output=tmp_path / "m.onnx", max_crops=2, method="minmax",
                                            **common))  # type: ignore[arg-type]
    print(f"\npercentile: {good.agreement.summary()}\nminmax, 2 crops: {naive.agreement.summary()}")
    assert good.agreement.heatmap_sqnr_db > naive.agreement.heatmap_sqnr_db
    assert good.agreement.within_one_heatmap_px >= naive.agreement.within_one_heatmap_px
    assert good.agreement.heatmap_sqnr_db > 20


def test_int8_heatmaps_run_through_the_service_backend(quantized):
    heatmaps = run_model(quantized.output, np.zeros((5, 3, *SMALL_INPUT), np.float32), max_batch=4)
    assert heatmaps.shape == (5, 17, 32, 24) and heatmaps.dtype == np.float32


def test_cli_exit_code_3_when_int8_is_not_faster(fp32_model, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("model_export.quantize.quantizer.measure_speed", speed_probe(0.7))
    output = tmp_path / "slow.int8.onnx"
    code = main(["quantize", "--model", str(fp32_model), "--output", str(output), "--calibration-annotations",
                 str(photos[0]), "--calibration-images", str(photos[1]), "--max-crops", "8", "--max-held-out-crops",
                 "4", "--no-search", "--target-median-px", "1e9", "--target-within-one", "0"])
    assert code == 3 and capsys.readouterr().err.startswith(NO_GAIN) and not output.exists()
