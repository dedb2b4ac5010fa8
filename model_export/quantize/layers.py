"""Per-layer error of a QDQ model against its float parent: where the int8 noise enters and how it grows.

Every compute node of the QDQ graph whose output tensor also exists in the float graph is a layer. Both graphs get
those tensors as extra outputs (in the QDQ graph the dequantized copy, i.e. what the next layer really reads) and
run on the same crops with ONNX Runtime's full optimisations, so the int8 layers run their real kernels. Each
layer gets:

- `sqnr_db`: SQNR of its output against the float output, i.e. all the error accumulated up to it;
- `added_db`: the noise this layer adds by itself, as an SQNR: 10 log10(1 / (NSR_out - max NSR_in)), where NSR is
  noise over signal power. An exact-input int8 conv typically adds 35-45 dB worth; a layer well below that (an
  activation with outliers, a range that clipping cuts) is what the mixed-precision search tries in float first.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# An SQNR above this means "no measurable error" (float rounding only).
EXACT_DB = 150.0


@dataclass
class LayerError:
    name: str
    op_type: str
    tensor: str
    int8: bool  # runs on int8 inputs (its data inputs and weights come through DequantizeLinear)
    sqnr_db: float
    added_db: float

    def as_dict(self) -> dict[str, str | bool | float]:
        out = asdict(self)
        out["sqnr_db"], out["added_db"] = round(self.sqnr_db, 2), round(self.added_db, 2)
        return out


@dataclass(frozen=True)
class _Layer:
    name: str
    op_type: str
    tensor: str  # the name in the float graph
    read_as: str  # the name read in the QDQ graph (its DequantizeLinear output when the output is quantized)
    inputs: tuple[str, ...]  # float-graph names of its data inputs
    int8: bool


def _layers(qdq: onnx.ModelProto, float_tensors: set[str]) -> list[_Layer]:
    initializers = {i.name for i in qdq.graph.initializer}
    producer = {out: node for node in qdq.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in qdq.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def dequantized(tensor: str) -> str:
        for q in consumers.get(tensor, []):
            if q.op_type == "QuantizeLinear":
                for dq in consumers.get(q.output[0], []):
                    if dq.op_type == "DequantizeLinear":
                        return str(dq.output[0])
        return tensor

    def origin(tensor: str) -> str:  # through DQ <- Q back to the float tensor
        node = producer.get(tensor)
        while node is not None and node.op_type in QDQ_OPS:
            tensor = node.input[0]
            node = producer.get(tensor)
        return tensor

    layers = []
    for node in qdq.graph.node:
        if node.op_type in QDQ_OPS or not node.output or node.output[0] not in float_tensors:
            continue
        data = [name for name in node.input if name and name not in initializers]
        via_dq = [name for name in data if name in producer and producer[name].op_type == "DequantizeLinear"]
        int8 = bool(data) and len(via_dq) == len(data)
        if node.op_type in WEIGHTED_OPS:  # its weight must be int8 too (an excluded conv reads a float initializer)
            int8 = int8 and node.input[1] in via_dq
        sources = tuple(origin(name) for name in data if origin(name) not in initializers)
        layers.append(_Layer(node.name, node.op_type, node.output[0], dequantized(node.output[0]), sources, int8))
    return layers


def _with_outputs(model: onnx.ModelProto, names: Iterable[str], path: Path) -> Path:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            present.add(name)
    onnx.save(model, str(path))
    return path


def _session(path: Path):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def layer_errors(float_model: Path, qdq_model: Path, batches: list[np.ndarray]) -> list[LayerError]:
    """Per-layer SQNR of `qdq_model` against `float_model` over `batches` (float32 NCHW), in graph order."""
    float_proto, qdq_proto = onnx.load(str(float_model)), onnx.load(str(qdq_model))
    float_tensors = {out for node in float_proto.graph.node for out in node.output}
    layers = _layers(qdq_proto, float_tensors)
    signal = dict.fromkeys((layer.tensor for layer in layers), 0.0)
    noise = dict.fromkeys(signal, 0.0)
    with tempfile.TemporaryDirectory(prefix="layer-errors.") as tmp:
        float_session = _session(_with_outputs(float_proto, signal, Path(tmp) / "float.onnx"))
        qdq_session = _session(_with_outputs(qdq_proto, [layer.read_as for layer in layers], Path(tmp) / "qdq.onnx"))
        float_input, qdq_input = float_session.get_inputs()[0].name, qdq_session.get_inputs()[0].name
        float_names = list(signal)
        qdq_names = [layer.read_as for layer in layers]
        for batch in batches:
            reference = dict(zip(float_names, float_session.run(float_names, {float_input: batch}), strict=True))
            quantized = qdq_session.run(qdq_names, {qdq_input: batch})
            for layer, value in zip(layers, quantized, strict=True):
                ref = reference[layer.tensor].astype(np.float64, copy=False)
                signal[layer.tensor] += float(np.square(ref).sum())
                noise[layer.tensor] += float(np.square(ref - value).sum())
    nsr = {name: noise[name] / signal[name] if signal[name] > 0 else (0.0 if noise[name] == 0 else math.inf)
           for name in signal}
    out = []
    for layer in layers:
        before = max((nsr.get(name, 0.0) for name in layer.inputs), default=0.0)
        out.append(LayerError(layer.name, layer.op_type, layer.tensor, layer.int8, _db(nsr[layer.tensor]),
                              _db(nsr[layer.tensor] - before)))
    return out


def _db(noise_to_signal: float) -> float:
    if noise_to_signal <= 10 ** (-EXACT_DB / 10):
        return EXACT_DB
    if math.isinf(noise_to_signal):
        return -EXACT_DB
    return float(-10.0 * math.log10(noise_to_signal))

