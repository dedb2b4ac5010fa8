"""HRNet for top-down pose estimation, with the official module names.

Attribute names, registration order and shapes follow leoxiaobin/deep-high-resolution-net.pytorch
(`PoseHighResolutionNet`), so the official checkpoints load with `strict=True` and the state_dict order is
the official one. Network: a stride-4 stem, layer1 (4 Bottlenecks, 64 -> 256 channels), then stages 2-4 that
keep parallel branches at strides 4/8/16/32 and exchange information after every module ("fuse"), and a final
conv on the stride-4 branch that produces one heatmap per joint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from model_export.configs import HRNetConfig, StageConfig

BN_MOMENTUM = 0.1
BN_EPS = 1e-5
STEM_CHANNELS = 64


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = batch_norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = batch_norm(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = batch_norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = batch_norm(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = batch_norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_blocks(block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int,
                num_blocks: int, stride: int = 1) -> nn.Sequential:
    """A run of residual blocks; the first one gets a 1x1 conv+BN shortcut when the shape changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            batch_norm(out_channels),
        )
    layers = [block(in_channels, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def modules_with_gaps(modules: Iterable[nn.Module | None]) -> nn.ModuleList:
    """A ModuleList whose None entries are pass-throughs: the official layout (and so the checkpoints' keys)
    has such gaps. torch accepts None there at run time; its type hints do not say so."""
    return nn.ModuleList(cast("list[nn.Module]", list(modules)))


def fuse_path(in_channels: list[int], source: int, target: int) -> nn.Module | None:
    """How branch `source` reaches the resolution and width of branch `target` (None: identity).

    Coarse -> fine: 1x1 conv + BN + nearest upsampling. Fine -> coarse: a chain of 3x3 stride-2 convs; only
    the last one changes the width and has no ReLU, because the sum is activated afterwards.
    """
    if source == target:
        return None
    if source > target:
        return nn.Sequential(
            conv1x1(in_channels[source], in_channels[target]),
            batch_norm(in_channels[target]),
            nn.Upsample(scale_factor=2 ** (source - target), mode="nearest"),
        )
    steps = []
    for step in range(target - source):
        if step == target - source - 1:
            steps.append(nn.Sequential(conv3x3(in_channels[source], in_channels[target], stride=2),
                                       batch_norm(in_channels[target])))
        else:
            steps.append(nn.Sequential(conv3x3(in_channels[source], in_channels[source], stride=2),
                                       batch_norm(in_channels[source]),
                                       nn.ReLU(inplace=False)))
    return nn.Sequential(*steps)


class HighResolutionModule(nn.Module):
    """Parallel branches (one per resolution) followed by an all-to-all fusion by summation.

    With `multi_scale_output=False` (the last module of the network) only the highest-resolution output is
    fused, which is all the final layer needs.
    """

    def __init__(self, stage: StageConfig, in_channels: list[int], multi_scale_output: bool = True):
        super().__init__()
        block = BLOCKS[stage.block]
        self.num_branches = stage.num_branches
        self.branches = nn.ModuleList(
            make_blocks(block, in_channels[i], stage.num_channels[i], stage.num_blocks[i])
            for i in range(stage.num_branches)
        )
        self.out_channels = [c * block.expansion for c in stage.num_channels]
        self.fuse_layers = self._make_fuse_layers(multi_scale_output)
        self.relu = nn.ReLU(inplace=False)

    def _make_fuse_layers(self, multi_scale_output: bool) -> nn.ModuleList | None:
        if self.num_branches == 1:
            return None
        targets = self.num_branches if multi_scale_output else 1
        return nn.ModuleList(
            modules_with_gaps(fuse_path(self.out_channels, source, target) for source in range(self.num_branches))
            for target in range(targets)
        )

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for paths in self.fuse_layers:
            total = None
            for path, x in zip(cast(nn.ModuleList, paths), xs, strict=True):
                y = x if path is None else path(x)
                total = y if total is None else total + y
            fused.append(self.relu(total))
        return fused


def make_transition(previous: list[int], current: list[int]) -> nn.ModuleList:
    """Adapt the branches of one stage to the next: re-width existing branches, create new coarser ones.

    Kept branches with equal width pass through (None). A new branch i is derived from the coarsest existing
    branch by (i - len(previous) + 1) 3x3 stride-2 convs.
    """
    layers: list[nn.Module | None] = []
    for i, channels in enumerate(current):
        if i < len(previous):
            if previous[i] == channels:
                layers.append(None)
            else:
                layers.append(nn.Sequential(conv3x3(previous[i], channels), batch_norm(channels),
                                            nn.ReLU(inplace=True)))
            continue
        steps = []
        extra = i - len(previous)
        for step in range(extra + 1):
            width_in = previous[-1]
            width_out = channels if step == extra else width_in
            steps.append(nn.Sequential(conv3x3(width_in, width_out, stride=2), batch_norm(width_out),
                                       nn.ReLU(inplace=True)))
        layers.append(nn.Sequential(*steps))
    return modules_with_gaps(layers)


def make_stage(stage: StageConfig, in_channels: list[int],
               multi_scale_output: bool = True) -> tuple[nn.Sequential, list[int]]:
    """`num_modules` HighResolutionModules; returns them and the widths of their outputs."""
    modules = []
    for index in range(stage.num_modules):
        last = index == stage.num_modules - 1
        module = HighResolutionModule(stage, in_channels, multi_scale_output or not last)
        modules.append(module)
        in_channels = module.out_channels
    return nn.Sequential(*modules), in_channels


def apply_transition(transition: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """New (coarser) branches grow from the coarsest input. The official code feeds every re-widened branch
    from the coarsest input too, which only works when it *is* the coarsest; here branch i uses input i."""
    out = []
    for i, layer in enumerate(transition):
        source = xs[i] if i < len(xs) else xs[-1]
        out.append(source if layer is None else layer(source))
    return out


class HRNet(nn.Module):
    """Input (N, 3, H, W) normalised RGB -> heatmaps (N, num_joints, H/4, W/4)."""

    # registered by name in __init__ (the official attribute names, hence the checkpoints' keys)
    transition1: nn.ModuleList
    transition2: nn.ModuleList
    transition3: nn.ModuleList
    stage2: nn.Sequential
    stage3: nn.Sequential
    stage4: nn.Sequential

    def __init__(self, config: HRNetConfig):
        super().__init__()
        self.config = config
        # Stem: two stride-2 3x3 convs bring the input to stride 4.
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = batch_norm(STEM_CHANNELS)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = batch_norm(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_blocks(Bottleneck, STEM_CHANNELS, 64, num_blocks=4)

        channels = [64 * Bottleneck.expansion]
        for index, stage in enumerate(config.stages, start=2):
            widths = [c * BLOCKS[stage.block].expansion for c in stage.num_channels]
            setattr(self, f"transition{index - 1}", make_transition(channels, widths))
            module, channels = make_stage(stage, widths, multi_scale_output=index < 4)
            setattr(self, f"stage{index}", module)

        kernel = config.final_conv_kernel
        self.final_layer = nn.Conv2d(channels[0], config.num_joints, kernel_size=kernel, stride=1,
                                     padding=1 if kernel == 3 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        xs = self.stage2(apply_transition(self.transition1, xs))
        xs = self.stage3(apply_transition(self.transition2, xs))
        xs = self.stage4(apply_transition(self.transition3, xs))
        return self.final_layer(xs[0])

    def init_weights(self) -> None:
        """The official random init: conv weights N(0, 0.001), biases 0, BN scale 1 and shift 0.

        Modules are visited in registration order, so a given seed always yields the same weights.
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)


def build_hrnet(config: HRNetConfig, seed: int | None = None) -> HRNet:
    """A fresh model; with a seed, initialised reproducibly with the official random init."""
    model = HRNet(config)
    if seed is not None:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model.init_weights()
        torch.random.set_rng_state(generator_state)
    return model
