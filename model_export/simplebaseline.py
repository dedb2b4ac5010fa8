"""A MobileNetV2 SimpleBaseline pose network: the kind of small third-party model INT8 must survive.

The backbone is torchvision's MobileNetV2 `features` (Sandler et al. 2018), written out here because torchvision
does not import beside this project's torch: the same inverted-residual settings, channel rounding
(`_make_divisible`), ReLU6 activations, BatchNorm after every convolution, module nesting and parameter names
(`features.N.conv.M...`) and weight initialisation as torchvision.models.mobilenetv2. The head is Xiao et al.'s
SimpleBaseline (human-pose-estimation.pytorch, pose_resnet.py): three 4x4 stride-2 ConvTranspose + BN + ReLU
layers bringing stride 32 back to stride 4, then a 1x1 convolution to one heatmap per joint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from posecore import coco

# torchvision's MobileNetV2 settings: expansion t, output channels c, repeats n, first stride s.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
FIRST_CHANNELS, LAST_CHANNELS = 32, 1280


@dataclass(frozen=True)
class SimpleBaselineConfig:
    name: str = "mobilenetv2_simplebaseline_128x96"
    input_size: tuple[int, int] = (128, 96)  # (height, width)
    width_mult: float = 1.0
    deconv_channels: int = 256  # SimpleBaseline's 256; the test model uses fewer to stay small
    num_joints: int = len(coco.KEYPOINT_NAMES)
    sigma: float = 2.0

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return self.input_size[0] // 4, self.input_size[1] // 4

    def to_dict(self) -> dict:
        return asdict(self)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: round to a multiple of `divisor`, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNormActivation(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6, 'same' padding: torchvision's ConvNormActivation as MobileNetV2 uses it."""

    def __init__(self, inp: int, oup: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)  # torchvision: int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormActivation(inp, hidden, kernel_size=1))  # pointwise expansion
        layers += [ConvNormActivation(hidden, hidden, stride=stride, groups=hidden),  # depthwise
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]  # linear bottleneck
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def mobilenet_v2_features(width_mult: float = 1.0) -> nn.Sequential:
    """torchvision MobileNetV2(width_mult).features: stride 32, `last_channels` outputs."""
    channels = make_divisible(FIRST_CHANNELS * width_mult)
    layers: list[nn.Module] = [ConvNormActivation(3, channels, stride=2)]
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        out = make_divisible(c * width_mult)
        for i in range(n):
            layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
            channels = out
    layers.append(ConvNormActivation(channels, last_channels(width_mult), kernel_size=1))
    return nn.Sequential(*layers)


def last_channels(width_mult: float) -> int:
    return make_divisible(LAST_CHANNELS * max(1.0, width_mult))


class SimpleBaseline(nn.Module):
    def __init__(self, config: SimpleBaselineConfig) -> None:
        super().__init__()
        self.config = config
        self.features = mobilenet_v2_features(config.width_mult)
        layers: list[nn.Module] = []
        channels = last_channels(config.width_mult)
        for _ in range(3):
            layers += [nn.ConvTranspose2d(channels, config.deconv_channels, 4, stride=2, padding=1, output_padding=0,
                                          bias=False), nn.BatchNorm2d(config.deconv_channels), nn.ReLU(inplace=True)]
            channels = config.deconv_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(channels, config.num_joints, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(self.features(x)))


def build_simplebaseline(config: SimpleBaselineConfig, seed: int = 0) -> SimpleBaseline:
    """The network with the published initialisations: torchvision's for the backbone (Kaiming fan-out convs,
    BN 1/0), SimpleBaseline's for the head (deconvs and the final conv N(0, 0.001), biases 0)."""
    torch.manual_seed(seed)
    model = SimpleBaseline(config)
    for m in model.features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in [*model.deconv_layers.modules(), model.final_layer]:
        if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def export_unfolded(model: SimpleBaseline, path: str, opset: int = 13) -> None:
    """ONNX as older exporters wrote such models: BatchNormalization nodes kept (no Conv+BN folding, no constant
    folding), ReLU6 as Clip with its bounds as Constant nodes, input 'input' and output 'heatmaps' with a dynamic
    batch axis."""
    import warnings

    height, width = model.config.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, height, width),), path, dynamo=False,
                          opset_version=opset, input_names=["input"], output_names=["heatmaps"],
                          dynamic_axes={"input": {0: "batch"}, "heatmaps": {0: "batch"}},
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
