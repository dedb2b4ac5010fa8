"""The error every export raises when ONNX Runtime disagrees with torch (HRNet and the YOLOX detector alike)."""


class ExportCheckFailed(RuntimeError):
    """ONNX Runtime disagrees with torch beyond the tolerance."""
