"""The optional FP16 export: half-precision weights and arithmetic, float32 I/O, verified against FP32 on CPU."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from model_export.export import ExportCheckFailed, export_onnx
from model_export.fp16 import FP16_RELATIVE_TOLERANCE
from posecore.backend import OrtBackend
from tests.helpers import require_shared


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    checkpoint = require_shared("reference/tiny_hrnet_state_dict.pt")
    folder = tmp_path_factory.mktemp("fp16")
    fp32 = export_onnx("tiny", folder / "tiny32.onnx", checkpoint=checkpoint)
    fp16 = export_onnx("tiny", folder / "tiny16.onnx", checkpoint=checkpoint, fp16=True)
    return folder, fp32, fp16


def test_fp16_export_holds_half_precision_weights_behind_float32_io(exports):
    folder, _, card = exports
    model = onnx.load(str(folder / "tiny16.onnx"))
    weight_types = {init.data_type for init in model.graph.initializer if len(init.dims) == 4}
    assert weight_types == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    check = card.export_check
    assert check["precision"] == "fp16" and check["fp16_max_abs_diff"] <= check["fp16_tolerance"]
    assert (folder / "tiny16.onnx").stat().st_size < 0.6 * (folder / "tiny32.onnx").stat().st_size


def test_fp16_heatmaps_stay_within_the_stated_tolerance_on_the_reference_input(exports, reference_npz):
    folder, _, _ = exports
    x = reference_npz("tiny_forward.npz")["input"]
    fp32 = OrtBackend(folder / "tiny32.onnx", provider="cpu").infer(x)
    fp16 = OrtBackend(folder / "tiny16.onnx", provider="cpu").infer(x)  # the service's backend runs it unchanged
    assert fp16.dtype == np.float32
    assert np.abs(fp16 - fp32).max() <= FP16_RELATIVE_TOLERANCE * np.abs(fp32).max()


def test_an_fp16_export_outside_the_tolerance_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    import model_export.fp16

    monkeypatch.setattr(model_export.fp16, "FP16_RELATIVE_TOLERANCE", 0.0)  # no FP16 model can meet this
    with pytest.raises(ExportCheckFailed, match="FP16 differs from FP32"):
        export_onnx("tiny", tmp_path / "strict16.onnx", fp16=True)
    assert not (tmp_path / "strict16.onnx").exists()
