"""Static INT8 (ONNX QDQ) quantization of pose models for CPUs: `python -m model_export quantize`."""
