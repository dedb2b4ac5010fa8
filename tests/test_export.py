"""ONNX export of the tiny HRNet: graph contract, ORT vs torch, model card, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from model_export.__main__ import main
from model_export.checkpoint import CheckpointMismatch, file_sha256
from model_export.configs import get_config
from model_export.export import export_onnx
from model_export.hrnet import HRNet, build_hrnet
from posecore import coco
from posecore.codecs.spec import CodecSpec
from posecore.modelcard import UNTRAINED_WARNING, ModelCard, card_path_for
from tests.helpers import ROOT, require_shared

SEED = 5


@pytest.fixture(scope="module")
def random_export(tmp_path_factory) -> tuple[Path, ModelCard]:
    path = tmp_path_factory.mktemp("random") / "tiny_random.onnx"
    return path, export_onnx("tiny", path, seed=SEED)


@pytest.fixture(scope="module")
def trained_export(tmp_path_factory) -> tuple[Path, ModelCard, Path]:
    checkpoint = require_shared("reference/tiny_hrnet_state_dict.pt")
    path = tmp_path_factory.mktemp("trained") / "tiny_trained.onnx"
    return path, export_onnx("tiny", path, checkpoint=checkpoint), checkpoint


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["heatmaps"], {"input": x})[0]


def assert_graph_contract(path: Path) -> None:
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert graph_input.name == "input" and graph_output.name == "heatmaps"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = graph_input.type.tensor_type.shape.dim
    out_dims = graph_output.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch" and out_dims[0].dim_param == "batch"
    assert [d.dim_value for d in in_dims[1:]] == [3, 256, 192]
    assert [d.dim_value for d in out_dims[1:]] == [17, 64, 48]


def assert_ort_matches_torch(path: Path, model: HRNet) -> None:
    for batch in (1, 3):
        x = torch.randn(batch, 3, 256, 192, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model.eval()(x).numpy()
        actual = run_onnx(path, x.numpy())
        assert actual.shape == (batch, 17, 64, 48)
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_random_init_export_graph_and_numerics(random_export) -> None:
    path, _ = random_export
    assert_graph_contract(path)
    assert_ort_matches_torch(path, build_hrnet(get_config("tiny"), seed=SEED))


def test_random_init_card_says_untrained(random_export) -> None:
    path, card = random_export
    assert ModelCard.read(card_path_for(path)) == card
    assert card.name == "tiny_random" and card.arch == "tiny"
    assert card.trained is False and card.warning == UNTRAINED_WARNING
    assert card.weights.source == "random-init" and card.weights.seed == SEED
    assert card.weights.checkpoint_sha256 is None
    assert card.onnx_sha256 == file_sha256(path)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["hrnet_pose.trained"] == "false" and metadata["hrnet_pose.arch"] == "tiny"


def test_card_describes_input_output_and_keypoints(random_export) -> None:
    _, card = random_export
    assert (card.input.name, card.input.height, card.input.width) == ("input", 256, 192)
    assert (card.output.name, card.output.height, card.output.width) == ("heatmaps", 64, 48)
    assert card.output.num_keypoints == len(card.keypoints) == 17
    assert card.keypoints == list(coco.KEYPOINT_NAMES)
    assert [list(p) for p in card.flip_pairs] == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]
    assert card.opset >= 17 and card.dynamic_batch is True
    assert set(card.versions) == {"torch", "onnx", "onnxruntime", "python", "hrnet-pose"}
    check = card.export_check
    assert check["batches"] == [1, 3] and check["max_abs_diff"] <= check["tolerance"]


def test_random_init_export_is_reproducible(random_export, tmp_path) -> None:
    _, card = random_export
    again = export_onnx("tiny", tmp_path / "again.onnx", seed=SEED)
    assert again.onnx_sha256 == card.onnx_sha256


def test_checkpoint_export_matches_reference_model(trained_export) -> None:
    path, _, checkpoint = trained_export
    assert_graph_contract(path)
    model = HRNet(get_config("tiny"))
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    assert_ort_matches_torch(path, model)
    forward = np.load(require_shared("reference/tiny_forward.npz"))
    expected = forward["output"]
    np.testing.assert_allclose(run_onnx(path, forward["input"]), expected, rtol=0,
                               atol=1e-4 * np.abs(expected).max())


def test_checkpoint_card_says_trained(trained_export) -> None:
    path, card, checkpoint = trained_export
    assert card.trained is True and card.warning is None
    assert card.weights.source == checkpoint.name and card.weights.seed is None
    assert card.weights.checkpoint_sha256 == file_sha256(checkpoint)
    assert card.onnx_sha256 == file_sha256(path)
    assert card.export_check["max_abs_output"] > 0.01  # real signal, so the check is not vacuous


def test_wrong_checkpoint_leaves_no_files(tmp_path) -> None:
    with torch.device("meta"):
        w32 = HRNet(get_config("w32_256x192")).state_dict()
    output = tmp_path / "wrong.onnx"
    with pytest.raises(CheckpointMismatch):
        export_onnx("tiny", output, checkpoint={"state_dict": w32})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [16, 21])
def test_unsupported_opset_is_refused(tmp_path, opset) -> None:
    with pytest.raises(ValueError, match="opset"):
        export_onnx("tiny", tmp_path / "x.onnx", opset=opset)


def test_cli_help_explains_export(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("UNTRAINED", "--random-init", '"batch"', "Model card", "--checkpoint", "python -m service"):
        assert phrase in text, phrase


def test_cli_rejects_seed_with_checkpoint(tmp_path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", "--arch", "tiny", "--checkpoint", str(tmp_path / "x.pth"), "--seed", "1"])
    assert exited.value.code == 2


def test_cli_random_init_says_untrained(tmp_path) -> None:
    output = tmp_path / "cli.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "model_export", "export", "--arch", "tiny", "--random-init", "--seed", "3",
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "UNTRAINED" in result.stdout
    log_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert log_lines and all("UNTRAINED" in line for line in log_lines), result.stderr
    assert output.exists() and card_path_for(output).exists()
    assert ModelCard.read(card_path_for(output)).weights.seed == 3


def test_cli_codec_goes_into_the_card_and_an_unknown_one_is_refused(tmp_path, capsys) -> None:
    output = tmp_path / "udp.onnx"
    assert main(["export", "--arch", "tiny", "--random-init", "--output", str(output),
                 "--codec", '{"type": "UDPHeatmap", "blur_kernel_size": 11}']) == 0
    assert ModelCard.read(card_path_for(output)).codec == CodecSpec(type="UDPHeatmap")
    with pytest.raises(SystemExit) as exited:
        main(["export", "--arch", "tiny", "--random-init", "--codec", '{"type": "SimCC"}'])
    error = capsys.readouterr().err.splitlines()[-1]
    assert exited.value.code == 2 and "--codec: not a codec: type: Input should be 'MSRAHeatmap'" in error, error


def test_cli_reports_a_bad_checkpoint_briefly(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, bad)
    assert main(["export", "--arch", "tiny", "--checkpoint", str(bad), "--output", str(tmp_path / "b.onnx")]) == 1
    error = capsys.readouterr().err
    assert "missing keys" in error and "shape mismatches" in error and len(error) < 2000
    assert "Traceback" not in error


def test_failed_check_keeps_no_file(tmp_path, monkeypatch) -> None:
    from model_export import export

    monkeypatch.setattr(export, "RELATIVE_TOLERANCE", -1.0)  # no difference can pass
    with pytest.raises(export.ExportCheckFailed):
        export_onnx("tiny", tmp_path / "rejected.onnx", seed=0)
    assert list(tmp_path.iterdir()) == []
