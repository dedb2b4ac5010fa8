"""The pose core: what serving (`service/`) and training, export and evaluation (`model_export/`) both need.

COCO constants, the affine geometry, heatmap decoding, box rules, image decoding, the model card, the pure pose
codec, the ONNX Runtime session wrapper and the person detector. It imports neither `service` nor `model_export`,
and they never import each other: serving and training can only agree, because they run the same code.
"""
