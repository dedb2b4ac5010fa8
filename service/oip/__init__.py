"""The Open Inference Protocol v2 (KServe / Triton REST) front door's protocol layer: tensors in and out, the pose
model's contract, the protocol's error form. The router is service/api/oip.py."""
