"""The float graph in the one form the quantizer handles best, checked to compute what the parent computes.

Exporters write the same network in different ways. Older ones keep BatchNormalization beside every convolution,
write ReLU6 as Clip with its bounds in Constant nodes (or as a Max/Min pair) and scatter Identity nodes; some
quantizers then see a conv, a BN and an activation as three tensors, each with its own int8 range. Here, before
anything is calibrated:

- Constant nodes become initializers (so bounds and shapes are visible as data);
- Identity nodes are removed;
- a Max(x, lo) / Min(., hi) pair with constant bounds becomes one Clip(lo, hi) (ReLU6 when 0 and 6), a lone
  Max(x, 0) and a Clip with no upper bound and lower bound 0 become Relu: activations the QDQ quantizer folds
  into the preceding convolution's output range;
- BatchNormalization (inference form) after a Conv or a ConvTranspose whose output nothing else reads is folded
  into that convolution's weights and bias.

The canonical graph and the parent then run on the same inputs in ONNX Runtime with its optimisations off; their
outputs must agree to CANONICAL_RELATIVE_TOLERANCE of the output's magnitude (folding only reorders float
arithmetic), else the model is refused.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model_export.quantize.graph import ModelNotQuantizable

CANONICAL_RELATIVE_TOLERANCE = 1e-4
CONVOLUTIONS = ("Conv", "ConvTranspose")


class _Graph:
    """A model being rewritten: initializers as arrays, node lookups rebuilt after each change."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.arrays = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}
        self.done: Counter[str] = Counter()

    def producer(self) -> dict[str, onnx.NodeProto]:
        return {out: node for node in self.graph.node for out in node.output}

    def readers(self) -> Counter[str]:
        return Counter(name for node in self.graph.node for name in node.input if name)

    def constant(self, name: str) -> np.ndarray | None:
        return self.arrays.get(name)

    def add_array(self, base: str, value: np.ndarray) -> str:
        name = base
        while name in self.arrays:
            name += "_c"
        self.arrays[name] = value
        return name

    def rename_input(self, old: str, new: str) -> None:
        for node in self.graph.node:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new

    def remove(self, node: onnx.NodeProto) -> None:
        self.graph.node.remove(node)

    def finish(self) -> onnx.ModelProto:
        used = {name for node in self.graph.node for name in node.input} | self.outputs
        self.graph.ClearField("initializer")
        self.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in self.arrays.items() if k in used)
        return self.model


def _constants_to_initializers(g: _Graph) -> None:
    for node in list(g.graph.node):
        if node.op_type != "Constant" or node.output[0] in g.outputs:
            continue
        attribute = node.attribute[0]
        if attribute.name not in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            continue  # sparse or string constants: left as they are
        value = helper.get_attribute_value(attribute)
        array = numpy_helper.to_array(value) if attribute.name == "value" else np.asarray(
            value, dtype=np.float32 if attribute.name.startswith("value_float") else np.int64)
        g.arrays[node.output[0]] = array
        g.remove(node)
        g.done["Constant -> initializer"] += 1


def _remove_identities(g: _Graph) -> None:
    for node in list(g.graph.node):
        if node.op_type != "Identity":
            continue
        source, target = node.input[0], node.output[0]
        if target in g.outputs:
            producer = g.producer().get(source)
            if producer is None or source in g.outputs or g.readers()[source] > 1:
                continue  # an output that is a graph input or initializer, or shared: keep the Identity
            producer.output[list(producer.output).index(source)] = target
        else:
            g.rename_input(target, source)
        g.remove(node)
        g.done["Identity removed"] += 1


def _scalar(g: _Graph, name: str) -> float | None:
    value = g.constant(name) if name else None
    return float(value) if value is not None and value.size == 1 else None


def _fuse_activations(g: _Graph) -> None:
    readers = g.readers()
    for node in list(g.graph.node):
        if node.op_type in ("Max", "Min") and len(node.input) == 2 and _scalar(g, node.input[1]) is not None:
            bound = _scalar(g, node.input[1])
            other = "Min" if node.op_type == "Max" else "Max"
            nxt = [n for n in g.graph.node if node.output[0] in n.input]
            follow = nxt[0] if len(nxt) == 1 and readers[node.output[0]] == 1 and node.output[0] not in g.outputs \
                else None
            if follow is not None and follow.op_type == other and len(follow.input) == 2 \
                    and follow.input[0] == node.output[0] and _scalar(g, follow.input[1]) is not None:
                second = _scalar(g, follow.input[1])
                low, high = (bound, second) if node.op_type == "Max" else (second, bound)
                if low is not None and high is not None and low <= high:
                    bounds = [g.add_array(f"{follow.output[0]}_min", np.array(low, np.float32)),
                              g.add_array(f"{follow.output[0]}_max", np.array(high, np.float32))]
                    _replace(g, follow, helper.make_node("Clip", [node.input[0], *bounds], [follow.output[0]],
                                                         name=follow.name or f"{node.name}_clip"))
                    g.remove(node)
                    g.done["Max/Min pair -> Clip"] += 1
                    continue
            if node.op_type == "Max" and bound == 0.0:
                _replace(g, node, helper.make_node("Relu", [node.input[0]], [node.output[0]], name=node.name))
                g.done["Max(x, 0) -> Relu"] += 1
        elif node.op_type == "Clip" and _scalar(g, node.input[1] if len(node.input) > 1 else "") == 0.0 \
                and (len(node.input) < 3 or not node.input[2]):
            _replace(g, node, helper.make_node("Relu", [node.input[0]], [node.output[0]], name=node.name))
            g.done["Clip(0, none) -> Relu"] += 1


def _replace(g: _Graph, old: onnx.NodeProto, new: onnx.NodeProto) -> None:
    index = list(g.graph.node).index(old)
    g.graph.node.remove(old)
    g.graph.node.insert(index, new)


def _fold_batch_norms(g: _Graph) -> None:
    for bn in list(g.graph.node):
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        if any(a.name == "training_mode" and a.i for a in bn.attribute):
            continue
        conv = g.producer().get(bn.input[0])
        params = [g.constant(name) for name in bn.input[1:5]]
        if conv is None or conv.op_type not in CONVOLUTIONS or g.readers()[conv.output[0]] != 1 \
                or conv.output[0] in g.outputs or any(p is None for p in params) or g.constant(conv.input[1]) is None:
            continue
        gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
        epsilon = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        factor = gamma / np.sqrt(var + epsilon)
        weight = np.asarray(g.constant(conv.input[1]), np.float64)
        bias = g.constant(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        bias = np.zeros(len(factor)) if bias is None else np.asarray(bias, np.float64)
        if conv.op_type == "Conv":
            weight = weight * factor.reshape(-1, *[1] * (weight.ndim - 1))
        else:  # ConvTranspose: (C_in, C_out / group, k...), output channel = group index * C_out/group + j
            group = next((a.i for a in conv.attribute if a.name == "group"), 1)
            per_group = weight.shape[1]
            shaped = weight.reshape(group, weight.shape[0] // group, per_group, *weight.shape[2:])
            scale = factor.reshape(group, 1, per_group, *[1] * (weight.ndim - 2))
            weight = (shaped * scale).reshape(weight.shape)
        folded_bias = (bias - mean) * factor + beta
        names = [g.add_array(f"{conv.name or conv.output[0]}_bn_weight", weight.astype(np.float32)),
                 g.add_array(f"{conv.name or conv.output[0]}_bn_bias", folded_bias.astype(np.float32))]
        del conv.input[1:]
        conv.input.extend(names)
        conv.output[0] = bn.output[0]
        g.remove(bn)
        g.done[f"BatchNormalization folded into {conv.op_type}"] += 1


def canonicalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The canonical copy of `model` and what was changed (counts by kind)."""
    g = _Graph(onnx.ModelProto.FromString(model.SerializeToString()))
    _constants_to_initializers(g)
    _remove_identities(g)
    _fuse_activations(g)
    _fold_batch_norms(g)
    out = g.finish()
    onnx.checker.check_model(out)
    return out, dict(g.done)


def relative_difference(original: Path, canonical: Path, inputs: np.ndarray) -> float:
    """max |a - b| / max |a| of the first outputs on `inputs`, with ONNX Runtime's graph optimisations off (so
    the parent's own BN and Identity nodes really run)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for p in (original, canonical)]
    a, b = (s.run(None, {s.get_inputs()[0].name: inputs})[0] for s in sessions)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b).max() / max(float(np.abs(a).max()), 1e-30))


def write_canonical(path: Path, out: Path, inputs: np.ndarray) -> dict[str, int]:
    """Write the canonical form of `path` to `out`, checked on `inputs` (a batch the model accepts)."""
    model, done = canonicalize(onnx.load(str(path)))
    onnx.save(model, str(out))
    difference = relative_difference(path, out, inputs)
    if not difference <= CANONICAL_RELATIVE_TOLERANCE:
        raise ModelNotQuantizable(f"{path}: its canonical form ({', '.join(done) or 'no change'}) changes the "
                                  f"outputs by {difference:.3g} of their magnitude; this graph cannot be quantized "
                                  "safely as it is")
    return done
