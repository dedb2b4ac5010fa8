"""Activation ranges, with the calibration method chosen per tensor.

One pass of ONNX Runtime's calibrator over the calibration crops gives every activation's range for the chosen
method (percentile by default) and, from the same histograms, its plain minimum and maximum. The head's tensors
(the single path from the backbone's last merge to the heatmaps: SimpleBaseline's deconvolutions, HRNet's last
fuse output) take the MinMax range instead: they are sparse, peaky activations where percentile or entropy
ranges clip exactly the peaks the heatmaps are made of. The merged ranges are written as ONNX Runtime's
calibration cache, so every quantize_static call of the search reuses them without calibrating again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization.calibrate import TensorData, TensorsData, create_calibrator, save_tensors_data
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from model_export.quantize.calibration import CropReader

METHODS = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
           "minmax": CalibrationMethod.MinMax}


@dataclass(frozen=True)
class Ranges:
    cache: Path  # ONNX Runtime's calibration cache with the merged ranges
    uniform_cache: Path  # the same with `method`'s ranges everywhere (to show what the head's ranges change)
    method: CalibrationMethod  # what quantize_static must be called with to accept the cache
    head_tensors: tuple[str, ...]  # tensors that took the head method's range
    per_tensor: dict[str, str]  # tensor -> "minmax" / "percentile 99.999" ... (the method its range came from)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime.quantization prints its progress and logs every bias copy at INFO on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def head_tensors(model: onnx.ModelProto) -> list[str]:
    """Activations on the single path that ends at the heatmap output, walked back from it to the last node that
    merges two computed tensors (or the graph input): outputs of that path's nodes, and the merge's output."""
    producer = {out: node for node in model.graph.node for out in node.output}
    initializers = {i.name for i in model.graph.initializer} | {
        out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    tensors: list[str] = []
    tensor = model.graph.output[0].name
    while tensor in producer:
        node = producer[tensor]
        data = [name for name in node.input if name and name not in initializers and name in producer]
        tensors.append(tensor)
        if len(data) != 1 or consumers.get(data[0], 0) != 1:
            break  # a merge, or a tensor that other branches read too: the backbone
        tensor = data[0]
    return [t for t in reversed(tensors) if t != model.graph.output[0].name]


def calibrate(prepared: Path, reader: CropReader, method: str, percentile: float, head_method: str | None,
              work: Path) -> Ranges:
    """Ranges of every activation of `prepared` over `reader`'s batches: `method` everywhere, `head_method`
    (None: no exception) on the head's tensors. Writes the cache into `work`."""
    model = onnx.load(str(prepared))
    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    options = {"percentile": percentile} if method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="calibrate-", dir=work) as tmp, quiet():
        calibrator = create_calibrator(prepared, ops, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=METHODS[method], extra_options=options)
        for start in range(len(reader)):  # one batch at a time: a large net's activations are GBs
            reader.set_range(start, start + 1)
            calibrator.collect_data(reader)
        computed = calibrator.compute_data()
        extremes = _extremes(calibrator, computed, method)
    label = f"percentile {percentile:g}" if method == "percentile" else method
    if head_method not in (None, "minmax"):
        raise ValueError(f"the head's ranges can only be minmax (or the method's own), not {head_method!r}")
    head = [t for t in head_tensors(model) if t in computed.data] if head_method and head_method != method else []
    uniform = {name: _range(*value.range_value) for name, value in computed.data.items()}
    mixed = {name: _range(*extremes[name]) if name in head else value for name, value in uniform.items()}
    per_tensor = {name: "minmax" if name in head else label for name in uniform}
    cache, uniform_cache = work / "calibration.json", work / "calibration-uniform.json"
    save_tensors_data(TensorsData(METHODS[method], mixed), cache)
    save_tensors_data(TensorsData(METHODS[method], uniform), uniform_cache)
    return Ranges(cache, uniform_cache, METHODS[method], tuple(head), per_tensor)


def _range(low, high) -> TensorData:  # numpy scalars or 1-element arrays, as the calibrators give them
    return TensorData(lowest=np.float32(np.min(low)), highest=np.float32(np.max(high)))


def _extremes(calibrator, computed: TensorsData, method: str) -> dict[str, tuple]:
    """Each tensor's minimum and maximum over the calibration crops, from what the calibrator collected."""
    if method == "minmax":
        return {name: v.range_value for name, v in computed.data.items()}
    histograms = calibrator.collector.histogram_dict  # (hist, edges, min, max) per tensor
    return {name: (h[2], h[3]) for name, h in histograms.items()}
