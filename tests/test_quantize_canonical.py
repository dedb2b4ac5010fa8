"""The canonical float graph before calibration: BatchNormalization folded into Conv and ConvTranspose, ReLU6 as
Clip / Max-Min pairs made one fusable activation, Identity and Constant nodes gone, outputs unchanged; and legacy
files (opset 8 BatchNormalization with `spatial`) refused cleanly."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_export.quantize.canonical import canonicalize, relative_difference, write_canonical
from model_export.quantize.graph import ModelNotQuantizable, upgrade_opset
from model_export.quantize.ranges import head_tensors

RNG = np.random.default_rng(0)


def array(name: str, *shape: int, low: float = -1.0, high: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.uniform(low, high, shape).astype(np.float32), name)


def batch_norm(prefix: str, channels: int) -> list[onnx.TensorProto]:
    return [array(f"{prefix}_gamma", channels, low=0.5, high=2.0), array(f"{prefix}_beta", channels),
            array(f"{prefix}_mean", channels), array(f"{prefix}_var", channels, low=0.1, high=2.0)]


def old_exporter_graph(opset: int = 13) -> onnx.ModelProto:
    """Conv -> BN -> Max/Min (ReLU6) -> Identity -> grouped ConvTranspose (bias) -> BN -> Clip(0, 6) with
    Constant bounds -> Conv -> BN -> Max(x, 0) -> heatmap Conv: what older exporters wrote."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", *[f"bn1_{k}" for k in ("gamma", "beta", "mean", "var")]],
                         ["b1"], name="bn1", epsilon=1e-3),
        helper.make_node("Max", ["b1", "zero"], ["m1"], name="max1"),
        helper.make_node("Min", ["m1", "six"], ["r1"], name="min1"),
        helper.make_node("Identity", ["r1"], ["i1"], name="identity1"),
        helper.make_node("ConvTranspose", ["i1", "wt", "bt"], ["d1"], name="deconv", strides=[2, 2],
                         pads=[1, 1, 1, 1], group=2),
        helper.make_node("BatchNormalization", ["d1", *[f"bn2_{k}" for k in ("gamma", "beta", "mean", "var")]],
                         ["b2"], name="bn2"),
        helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.array(6, np.float32))),
        helper.make_node("Clip", ["b2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c3", *[f"bn3_{k}" for k in ("gamma", "beta", "mean", "var")]],
                         ["b3"], name="bn3"),
        helper.make_node("Max", ["b3", "zero"], ["r3"], name="relu"),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["heatmaps"], name="heatmap_conv"),
    ]
    initializers = [array("w1", 8, 3, 3, 3), array("wt", 8, 4, 4, 4), array("bt", 8), array("w3", 8, 8, 3, 3),
                    array("w4", 5, 8, 1, 1), array("b4", 5), *batch_norm("bn1", 8), *batch_norm("bn2", 8),
                    *batch_norm("bn3", 8), numpy_helper.from_array(np.array(0, np.float32), "zero"),
                    numpy_helper.from_array(np.array(6, np.float32), "six")]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 12])],
                              [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 5, 32, 24])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_batch_norms_fold_into_conv_and_grouped_conv_transpose_and_activations_fuse(tmp_path):
    original = tmp_path / "old.onnx"
    onnx.save(old_exporter_graph(), str(original))
    canonical, done = canonicalize(onnx.load(str(original)))
    ops = Counter(node.op_type for node in canonical.graph.node)
    assert ops == {"Conv": 3, "ConvTranspose": 1, "Clip": 2, "Relu": 1}
    assert done == {"Constant -> initializer": 2, "Identity removed": 1, "Max/Min pair -> Clip": 1,
                    "Max(x, 0) -> Relu": 1, "BatchNormalization folded into Conv": 2,
                    "BatchNormalization folded into ConvTranspose": 1}
    clips = [node for node in canonical.graph.node if node.op_type == "Clip"]
    values = {i.name: numpy_helper.to_array(i) for i in canonical.graph.initializer}
    assert all(float(values[c.input[1]]) == 0.0 and float(values[c.input[2]]) == 6.0 for c in clips)
    path = tmp_path / "canonical.onnx"
    onnx.save(canonical, str(path))
    x = RNG.standard_normal((2, 3, 16, 12)).astype(np.float32) * 3
    difference = relative_difference(original, path, x)
    assert difference < 1e-5
    # the difference is not vacuous: folding a BN twice (a wrong fold) is caught
    doubled = onnx.load(str(path))
    weight = next(i for i in doubled.graph.initializer if i.name.startswith("deconv"))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(doubled, str(tmp_path / "wrong.onnx"))
    assert relative_difference(original, tmp_path / "wrong.onnx", x) > 1e-2


def test_write_canonical_checks_the_outputs(tmp_path, monkeypatch):
    original = tmp_path / "old.onnx"
    onnx.save(old_exporter_graph(), str(original))
    x = RNG.standard_normal((1, 3, 16, 12)).astype(np.float32)
    assert "Identity removed" in write_canonical(original, tmp_path / "c.onnx", x)
    monkeypatch.setattr("model_export.quantize.canonical.relative_difference", lambda *args: 0.5)
    with pytest.raises(ModelNotQuantizable, match=r"changes the outputs by 0\.5"):
        write_canonical(original, tmp_path / "c2.onnx", x)


def test_the_head_is_the_single_path_after_the_last_merge():
    model = old_exporter_graph()
    model.graph.node.insert(1, helper.make_node("Add", ["c1", "c1"], ["c1_twice"], name="merge"))
    model.graph.node[2].input[0] = "c1_twice"
    assert head_tensors(model) == ["c1_twice", "b1", "m1", "r1", "i1", "d1", "b2", "r2", "c3", "b3", "r3"]


def legacy_batch_norm(spatial: int, opset: int = 8) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", *[f"bn1_{k}" for k in ("gamma", "beta", "mean", "var")]],
                              ["heatmaps"], name="bn", spatial=spatial)]
    graph = helper.make_graph(nodes, "legacy", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["N", 3, 16, 12])],
                              [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 8, 16, 12])],
                              [array("w1", 8, 3, 3, 3), *batch_norm("bn1", 8)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def test_a_legacy_spatial_batch_norm_is_refused_cleanly_and_a_spatial_one_is_upgraded_and_folded(tmp_path):
    per_activation = tmp_path / "opset8_spatial0.onnx"
    onnx.save(legacy_batch_norm(spatial=0), str(per_activation))
    with pytest.raises(ModelNotQuantizable, match=r"opset 8.*spatial must have value 1.*Re-export"):
        upgrade_opset(per_activation, tmp_path)
    spatial = tmp_path / "opset8_spatial1.onnx"
    onnx.save(legacy_batch_norm(spatial=1), str(spatial))
    upgraded = upgrade_opset(spatial, tmp_path)
    x = RNG.standard_normal((1, 3, 16, 12)).astype(np.float32)
    done = write_canonical(upgraded, tmp_path / "canonical.onnx", x)
    assert done == {"BatchNormalization folded into Conv": 1}
    session = ort.InferenceSession(str(tmp_path / "canonical.onnx"), providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(str(tmp_path / "canonical.onnx")).graph.node] == ["Conv"]
    assert session.run(None, {"x": x})[0].shape == (1, 8, 16, 12)


def test_a_graph_output_behind_an_identity_keeps_its_name(tmp_path):
    model = old_exporter_graph()
    last = model.graph.node[-1]
    last.output[0] = "pre"
    model.graph.node.append(helper.make_node("Identity", ["pre"], ["heatmaps"], name="out_identity"))
    canonical, done = canonicalize(model)
    assert done["Identity removed"] == 2
    assert canonical.graph.node[-1].output[0] == "heatmaps" and canonical.graph.output[0].name == "heatmaps"
