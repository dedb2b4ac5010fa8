"""The float model made ready for quantization: opset checked (old ones upgraded and verified), shapes inferred
and the graph optimised as ONNX Runtime recommends (`quant_pre_process`), and the layers that stay in float found.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

log = logging.getLogger(__name__)

# Per-channel weight quantization (QuantizeLinear's axis) needs opset 13; older models are upgraded to it.
MIN_QUANT_OPSET = 13
# ONNX Runtime runs nothing older than opset 7, so an older model can be neither checked nor converted safely.
MIN_UPGRADABLE_OPSET = 7
# The upgraded graph must compute what the original did: same float arithmetic, so only rounding may differ.
UPGRADE_RELATIVE_TOLERANCE = 1e-4


class ModelNotQuantizable(ValueError):
    """The model cannot be quantized as it is; the message says why and what to do."""


@dataclass(frozen=True)
class FloatLayers:
    """Conv nodes that stay in float whatever the search finds, with the reason for each."""

    first_conv: str
    heatmap_conv: str

    def names(self) -> list[str]:
        return list(dict.fromkeys([self.first_conv, self.heatmap_conv]))


def load_model(path: Path) -> onnx.ModelProto:
    """The ONNX model in `path`; ModelNotQuantizable when it is not one (a JPEG given as --model, say)."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError for a file that is not one, OSError, ...
        raise ModelNotQuantizable(f"{path} is not an ONNX model ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if not model.graph.node:
        raise ModelNotQuantizable(f"{path} is not an ONNX model: it holds no graph")
    return model


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelNotQuantizable("the model imports no default ONNX opset")


def check_io(model: onnx.ModelProto, path: Path) -> None:
    """One float32 NCHW image input, at least one output: the top-down pose model the service serves."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelNotQuantizable(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise ModelNotQuantizable(f"{path}: the input is {kind}; quantize the float32 model (not an fp16 or an "
                                  "already quantized export)")
    if len(tensor.shape.dim) != 4:
        raise ModelNotQuantizable(f"{path}: the input must be NCHW (4 dimensions), it has {len(tensor.shape.dim)}")
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for node in model.graph.node):
        raise ModelNotQuantizable(f"{path} is already quantized; quantize its float32 parent")


def upgrade_opset(path: Path, work_dir: Path) -> Path:
    """`path` itself when its opset is recent enough; else a converted copy in `work_dir`, verified against the
    original in ONNX Runtime. Raises ModelNotQuantizable with the reason when neither works."""
    model = load_model(path)
    opset = default_opset(model)
    check_io(model, path)
    if opset >= MIN_QUANT_OPSET:
        return path
    if opset < MIN_UPGRADABLE_OPSET:
        raise ModelNotQuantizable(
            f"{path} uses opset {opset}; ONNX Runtime and the ONNX version converter start at opset "
            f"{MIN_UPGRADABLE_OPSET}, so it can be neither run nor upgraded. Re-export it with opset "
            f">= {MIN_QUANT_OPSET} (python -m model_export export --opset 17 ...).")
    try:
        upgraded = version_converter.convert_version(model, MIN_QUANT_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as exc:  # the converter raises bare RuntimeErrors and checker errors alike
        raise ModelNotQuantizable(
            f"{path} uses opset {opset}; quantization needs opset >= {MIN_QUANT_OPSET} (per-channel weights) and "
            f"the ONNX version converter could not upgrade it: {str(exc).splitlines()[0]}. Re-export it with a "
            "newer opset.") from None
    out = work_dir / f"{path.stem}.opset{MIN_QUANT_OPSET}.onnx"
    onnx.save(upgraded, str(out))
    difference = _relative_difference(path, out)
    if not difference <= UPGRADE_RELATIVE_TOLERANCE:
        raise ModelNotQuantizable(f"{path}: the opset {opset} -> {MIN_QUANT_OPSET} upgrade changed the outputs "
                                  f"(relative difference {difference:.3g}); re-export it with a newer opset.")
    log.info("upgraded %s from opset %d to %d (outputs agree to %.2g relative)", path, opset, MIN_QUANT_OPSET,
             difference)
    return out


def _relative_difference(original: Path, upgraded: Path) -> float:
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (original, upgraded)]
    first = sessions[0].get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in first.shape]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    a, b = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in sessions)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-30))


def pre_process(path: Path, out: Path) -> Path:
    """ONNX Runtime's recommended preparation: shape inference plus its basic graph optimisations (constant
    folding, BatchNorm into Conv), so every tensor has a known type and the quantizer sees the graph that will run.
    ONNX's own shape inference covers a conv net; the symbolic one (for transformers' dynamic shapes) gives up on
    HRNet's Resize nodes and is skipped."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(path), str(out), skip_symbolic_shape=True)
    return out


def find_float_layers(model: onnx.ModelProto) -> FloatLayers:
    """The first convolution (it sees the raw normalised pixels, whose range int8 cuts coarsely, and has only 3
    input channels, so int8 saves little there) and the final heatmap convolution (its output is the answer:
    the peaks' sub-pixel shape decides the quarter-pixel refinement)."""
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    if not convs:
        raise ModelNotQuantizable("the model has no Conv node; this is not a convolutional pose model")
    for node in convs:
        if not node.name:
            raise ModelNotQuantizable("a Conv node has no name; run the model through onnx's checker/exporter first")
    return FloatLayers(first_conv=convs[0].name, heatmap_conv=_heatmap_conv(model).name)


def _heatmap_conv(model: onnx.ModelProto) -> onnx.NodeProto:
    """The last Conv on the path to the first graph output (through Identity/Reshape/Resize-like ops)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    tensor = model.graph.output[0].name
    seen: set[str] = set()
    while tensor in producer and tensor not in seen:
        seen.add(tensor)
        node = producer[tensor]
        if node.op_type == "Conv":
            return node
        tensor = node.input[0]
    raise ModelNotQuantizable("no Conv node produces the heatmap output")
