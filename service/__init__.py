"""HRNet pose service: image + person boxes -> 17 COCO keypoints per person, via ONNX Runtime."""
