"""FP16 variant of an exported model: half-precision weights and arithmetic, float32 input and output.

Meant for GPUs (CUDA / TensorRT run FP16 at several times the FP32 rate); ONNX Runtime's CPU provider runs it
too, which is how it is verified here. FP16 keeps ~3 significant digits, so the check's tolerance is
FP16_RELATIVE_TOLERANCE x max |output| of the FP32 model on the same inputs; on the official tiny reference
model the FP16 heatmaps differ by ~0.5% of their maximum.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx

FP16_RELATIVE_TOLERANCE = 1e-2


def convert_to_fp16(fp32_path: Path, fp16_path: Path) -> None:
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():  # it warns once per weight it rounds to FP16's range; the check judges that
        warnings.simplefilter("ignore", UserWarning)
        # keep_io_types: callers still send float32 crops and get float32 heatmaps; casts sit inside the graph
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, str(fp16_path))


def compare_fp16(fp32_path: Path, fp16_path: Path, inputs: list[np.ndarray]) -> dict:
    """Max difference of the FP16 model from the FP32 one on `inputs`, and whether it is within tolerance."""
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    fp32 = onnxruntime.InferenceSession(str(fp32_path), providers=providers)
    fp16 = onnxruntime.InferenceSession(str(fp16_path), providers=providers)
    name = fp32.get_inputs()[0].name
    max_diff, max_out = 0.0, 0.0
    for x in inputs:
        expected = fp32.run(None, {name: x})[0]
        actual = fp16.run(None, {name: x})[0]
        max_diff = max(max_diff, float(np.abs(actual - expected).max()))
        max_out = max(max_out, float(np.abs(expected).max()))
    tolerance = FP16_RELATIVE_TOLERANCE * max_out
    return {"precision": "fp16", "fp16_max_abs_diff": max_diff, "fp16_max_abs_output": max_out,
            "fp16_tolerance": tolerance, "fp16_ok": int(max_out > 0 and max_diff <= tolerance)}
