"""The official HRNet training loss: heatmap MSE with per-joint target weights (core/loss.py JointsMSELoss)."""

from __future__ import annotations

import torch
from torch import nn


class JointsMSELoss(nn.Module):
    """0.5 x the mean squared error per joint, averaged over the joints.

    Official definition: for each joint j, 0.5 * MSE(pred_j * w_j, target_j * w_j) with MSE the mean over
    the batch and the heatmap pixels, then the sum over joints divided by their number. Every joint's mean
    runs over the same number of elements, so this equals 0.5 * mean over (batch, joint, pixel) of the
    weighted squared error, which is how it is computed here (one fused op instead of a loop of 17).
    A joint with weight 0 (unlabelled, or off the heatmap) contributes 0 but still counts in the average,
    as in the official code.
    """

    def __init__(self, use_target_weight: bool = True) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
        if output.shape != target.shape:
            raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ")
        batch, joints = output.shape[:2]
        pred = output.reshape(batch, joints, -1).float()  # under AMP the loss is still computed in float32
        gt = target.reshape(batch, joints, -1).float()
        if self.use_target_weight:
            weight = target_weight.reshape(batch, joints, 1).float()
            pred, gt = pred * weight, gt * weight
        return 0.5 * torch.mean((pred - gt) ** 2)
