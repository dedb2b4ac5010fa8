"""YOLOX as Megvii's `yolox.models` defines it, module for module, so that the official `model` state_dict loads
strictly (keys `backbone.backbone.dark2...`, `backbone.lateral_conv0...`, `head.cls_preds...`).

The forward pass is the exported inference form (`decode_in_inference=False`, as the official
tools/export_onnx.py): per level the concatenation [box regression (4, raw), sigmoid(objectness),
sigmoid(classes)], flattened row-major and stride by stride into (N, A, 5 + C). Decoding the grid is the
service's job (posecore.detection.yolox), which keeps the graph free of shape-dependent constants.
"""

from __future__ import annotations

import torch
from torch import nn

from model_export.yolox.configs import YoloxConfig

BN_EPS = 1e-3  # the exps' init_yolo (and mmdetection's norm_cfg) set eps 1e-3, momentum 0.03
BN_MOMENTUM = 0.03
SPP_KERNELS = (5, 9, 13)
PAFPN_CHANNELS = (256, 512, 1024)  # scaled by the width multiplier
HEAD_CHANNELS = 256


class BaseConv(nn.Module):
    """Conv (no bias) -> BatchNorm -> SiLU, 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, ksize, stride, padding=(ksize - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = BaseConv(channels, channels, 1)
        self.conv2 = BaseConv(channels, channels, 3)
        self.use_add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """Two 1x1 branches, bottlenecks on the first, concatenated and fused by a third 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, shortcut: bool = True) -> None:
        super().__init__()
        hidden = int(out_channels * 0.5)
        self.conv1 = BaseConv(in_channels, hidden, 1)
        self.conv2 = BaseConv(in_channels, hidden, 1)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, shortcut) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: max-pools of 5, 9, 13 (stride 1) beside the input, fused by a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(k, stride=1, padding=k // 2) for k in SPP_KERNELS])
        self.conv2 = BaseConv(hidden * (len(SPP_KERNELS) + 1), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], dim=1))


class Focus(nn.Module):
    """Space-to-depth: the four pixel phases side by side in channels (order TL, BL, TR, BR), then a conv."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int = 3) -> None:
        super().__init__()
        self.conv = BaseConv(in_channels * 4, out_channels, ksize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]),
                                   dim=1))


def _stage(in_channels: int, out_channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(BaseConv(in_channels, out_channels, 3, 2), CSPLayer(out_channels, out_channels, blocks))


class CSPDarknet(nn.Module):
    """Focus stem and four stride-2 stages; returns the stride 8, 16 and 32 features (dark3, dark4, dark5)."""

    def __init__(self, config: YoloxConfig) -> None:
        super().__init__()
        c, d = config.base_channels, config.base_depth
        self.stem = Focus(3, c)
        self.dark2 = _stage(c, c * 2, d)
        self.dark3 = _stage(c * 2, c * 4, d * 3)
        self.dark4 = _stage(c * 4, c * 8, d * 3)
        self.dark5 = nn.Sequential(BaseConv(c * 8, c * 16, 3, 2), SPPBottleneck(c * 16, c * 16),
                                   CSPLayer(c * 16, c * 16, d, shortcut=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(x))
        dark3 = self.dark3(x)
        dark4 = self.dark4(dark3)
        return dark3, dark4, self.dark5(dark4)


class YOLOPAFPN(nn.Module):
    """The backbone plus the path-aggregation neck: top-down (nearest x2 upsampling), then bottom-up."""

    def __init__(self, config: YoloxConfig) -> None:
        super().__init__()
        c3, c4, c5 = (int(ch * config.width) for ch in PAFPN_CHANNELS)
        n = config.neck_depth
        self.backbone = CSPDarknet(config)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, shortcut=False)
        self.reduce_conv1 = BaseConv(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, shortcut=False)
        self.bu_conv2 = BaseConv(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, shortcut=False)
        self.bu_conv1 = BaseConv(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, shortcut=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dark3, dark4, dark5 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(dark5)
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), dark4], 1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), dark3], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        return pan_out2, pan_out1, pan_out0


class YOLOXHead(nn.Module):
    """The decoupled head: per level a 1x1 stem, then a classification and a regression branch of two 3x3 convs;
    the regression branch feeds both the box (4) and the objectness (1) predictions."""

    def __init__(self, config: YoloxConfig) -> None:
        super().__init__()
        hidden = int(HEAD_CHANNELS * config.width)
        self.num_classes = config.num_classes
        # Registered in the official order (stems last), so both state_dicts list their keys alike.
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        self.stems = nn.ModuleList()
        for channels in PAFPN_CHANNELS:
            self.stems.append(BaseConv(int(channels * config.width), hidden, 1))
            self.cls_convs.append(nn.Sequential(BaseConv(hidden, hidden, 3), BaseConv(hidden, hidden, 3)))
            self.reg_convs.append(nn.Sequential(BaseConv(hidden, hidden, 3), BaseConv(hidden, hidden, 3)))
            self.cls_preds.append(nn.Conv2d(hidden, config.num_classes, 1))
            self.reg_preds.append(nn.Conv2d(hidden, 4, 1))
            self.obj_preds.append(nn.Conv2d(hidden, 1, 1))

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        levels = []
        for k, x in enumerate(features):
            x = self.stems[k](x)
            cls_feat, reg_feat = self.cls_convs[k](x), self.reg_convs[k](x)
            level = torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat).sigmoid(),
                               self.cls_preds[k](cls_feat).sigmoid()], 1)
            levels.append(level.flatten(start_dim=2))
        return torch.cat(levels, dim=2).permute(0, 2, 1)


class YOLOX(nn.Module):
    """images (N, 3, H, W) BGR 0-255 -> (N, A, 5 + C): raw box regression, objectness and class probabilities."""

    def __init__(self, config: YoloxConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = YOLOPAFPN(config)
        self.head = YOLOXHead(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))
