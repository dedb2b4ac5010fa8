"""Official HRNet weights by name: a registry (data), a cache, resumable verified downloads, and the `fetch`
command that exports them to ONNX + model card (model_export.fetch.cli)."""
