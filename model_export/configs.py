"""HRNet architectures held as data, plus a registry.

The official models are described by `MODEL.EXTRA` of the leoxiaobin yaml files (stage modules, branches,
blocks, channels). `config_from_official` reads any dict of that form, so a new width or input size needs
no code change; the named configs below are hard-coded so the package works without ../shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from posecore import coco

BLOCK_TYPES = ("BASIC", "BOTTLENECK")
FUSE_METHODS = ("SUM",)


@dataclass(frozen=True)
class StageConfig:
    """One of stages 2-4: `num_modules` HighResolutionModules, each with parallel branches."""

    num_modules: int
    num_branches: int
    block: str
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]
    fuse_method: str = "SUM"

    def __post_init__(self) -> None:
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"unknown block {self.block!r}; expected one of {BLOCK_TYPES}")
        if self.fuse_method not in FUSE_METHODS:
            raise ValueError(f"unknown fuse method {self.fuse_method!r}; expected one of {FUSE_METHODS}")
        if not (len(self.num_blocks) == len(self.num_channels) == self.num_branches):
            raise ValueError(
                f"stage has {self.num_branches} branches but num_blocks={self.num_blocks} "
                f"and num_channels={self.num_channels}"
            )
        if self.num_modules < 1:
            raise ValueError("a stage needs at least one module")


@dataclass(frozen=True)
class HRNetConfig:
    """Everything needed to build the network and to describe its input/output in the model card."""

    name: str
    stage2: StageConfig
    stage3: StageConfig
    stage4: StageConfig
    input_size: tuple[int, int]  # (height, width) of the network input
    heatmap_size: tuple[int, int]  # (height, width) of the output heatmaps
    sigma: float = 2.0  # Gaussian target sigma used in training
    num_joints: int = len(coco.KEYPOINT_NAMES)
    final_conv_kernel: int = 1

    def __post_init__(self) -> None:
        for before, after in ((self.stage2, self.stage3), (self.stage3, self.stage4)):
            if after.num_branches < before.num_branches:
                raise ValueError("each stage must keep or add branches")
        if self.final_conv_kernel not in (1, 3):
            raise ValueError("final_conv_kernel must be 1 or 3")

    @property
    def stages(self) -> tuple[StageConfig, StageConfig, StageConfig]:
        return (self.stage2, self.stage3, self.stage4)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stage_from_official(extra: Mapping[str, Any]) -> StageConfig:
    return StageConfig(
        num_modules=int(extra["NUM_MODULES"]),
        num_branches=int(extra["NUM_BRANCHES"]),
        block=str(extra["BLOCK"]),
        num_blocks=tuple(int(n) for n in extra["NUM_BLOCKS"]),
        num_channels=tuple(int(c) for c in extra["NUM_CHANNELS"]),
        fuse_method=str(extra.get("FUSE_METHOD", "SUM")),
    )


def config_from_official(
    extra: Mapping[str, Any],
    *,
    name: str = "custom",
    input_size: tuple[int, int] = (256, 192),
    heatmap_size: tuple[int, int] | None = None,
    sigma: float = 2.0,
    num_joints: int = len(coco.KEYPOINT_NAMES),
) -> HRNetConfig:
    """Build a config from an official `MODEL.EXTRA` dict (STAGE2/3/4 + FINAL_CONV_KERNEL).

    Sizes are (height, width); the heatmap defaults to a quarter of the input, as the network produces.
    """
    if heatmap_size is None:
        heatmap_size = (input_size[0] // 4, input_size[1] // 4)
    return HRNetConfig(
        name=name,
        stage2=_stage_from_official(extra["STAGE2"]),
        stage3=_stage_from_official(extra["STAGE3"]),
        stage4=_stage_from_official(extra["STAGE4"]),
        input_size=(int(input_size[0]), int(input_size[1])),
        heatmap_size=(int(heatmap_size[0]), int(heatmap_size[1])),
        sigma=float(sigma),
        num_joints=int(num_joints),
        final_conv_kernel=int(extra.get("FINAL_CONV_KERNEL", 1)),
    )


def config_from_official_model(model: Mapping[str, Any], *, name: str = "custom") -> HRNetConfig:
    """Build a config from a whole official `MODEL` section (EXTRA plus IMAGE_SIZE / HEATMAP_SIZE in w, h)."""
    image_wh = model.get("IMAGE_SIZE_WH", model.get("IMAGE_SIZE", (192, 256)))
    heatmap_wh = model.get("HEATMAP_SIZE_WH", model.get("HEATMAP_SIZE", (image_wh[0] // 4, image_wh[1] // 4)))
    return config_from_official(
        model["EXTRA"],
        name=name,
        input_size=(int(image_wh[1]), int(image_wh[0])),
        heatmap_size=(int(heatmap_wh[1]), int(heatmap_wh[0])),
        sigma=float(model.get("SIGMA", 2.0)),
        num_joints=int(model.get("NUM_JOINTS", len(coco.KEYPOINT_NAMES))),
    )


def config_from_dict(data: Mapping[str, Any]) -> HRNetConfig:
    """Inverse of `HRNetConfig.to_dict` (e.g. a config stored inside a training checkpoint)."""
    stages: dict[str, Any] = {key: StageConfig(**{**data[key], "num_blocks": tuple(data[key]["num_blocks"]),
                                               "num_channels": tuple(data[key]["num_channels"])})
                              for key in ("stage2", "stage3", "stage4")}
    rest = {k: v for k, v in data.items() if k not in stages}
    rest["input_size"] = tuple(rest["input_size"])
    rest["heatmap_size"] = tuple(rest["heatmap_size"])
    return HRNetConfig(**stages, **rest)


def _official_w(width: int, name: str, input_size: tuple[int, int], sigma: float) -> HRNetConfig:
    """The official W32/W48 layout: stage modules 1/4/3, four BasicBlocks per branch, widths w*2^i."""
    widths = [width * 2**i for i in range(4)]
    extra = {
        "FINAL_CONV_KERNEL": 1,
        "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC",
                   "NUM_BLOCKS": [4, 4], "NUM_CHANNELS": widths[:2], "FUSE_METHOD": "SUM"},
        "STAGE3": {"NUM_MODULES": 4, "NUM_BRANCHES": 3, "BLOCK": "BASIC",
                   "NUM_BLOCKS": [4, 4, 4], "NUM_CHANNELS": widths[:3], "FUSE_METHOD": "SUM"},
        "STAGE4": {"NUM_MODULES": 3, "NUM_BRANCHES": 4, "BLOCK": "BASIC",
                   "NUM_BLOCKS": [4, 4, 4, 4], "NUM_CHANNELS": widths, "FUSE_METHOD": "SUM"},
    }
    return config_from_official(extra, name=name, input_size=input_size, sigma=sigma)


# The small test network of ../shared/reference/tiny_hrnet_config.json: W32's stem, narrow single-module stages.
_TINY_EXTRA = {
    "FINAL_CONV_KERNEL": 1,
    "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC",
               "NUM_BLOCKS": [1, 1], "NUM_CHANNELS": [8, 16], "FUSE_METHOD": "SUM"},
    "STAGE3": {"NUM_MODULES": 1, "NUM_BRANCHES": 3, "BLOCK": "BASIC",
               "NUM_BLOCKS": [1, 1, 1], "NUM_CHANNELS": [8, 16, 32], "FUSE_METHOD": "SUM"},
    "STAGE4": {"NUM_MODULES": 1, "NUM_BRANCHES": 4, "BLOCK": "BASIC",
               "NUM_BLOCKS": [1, 1, 1, 1], "NUM_CHANNELS": [8, 16, 32, 64], "FUSE_METHOD": "SUM"},
}

# Sigma follows the official and mmpose configs: 2 at 256x192, 3 at 384x288 (mmpose td-hm_hrnet-w32_8xb64-210e_coco-
# 384x288.py and td-hm_hrnet-w48_8xb32-210e_coco-256x192.py: MSRAHeatmap sigma=3 and sigma=2).
_REGISTRY: dict[str, HRNetConfig] = {
    "w32_256x192": _official_w(32, "w32_256x192", (256, 192), sigma=2.0),
    "w32_384x288": _official_w(32, "w32_384x288", (384, 288), sigma=3.0),
    "w48_256x192": _official_w(48, "w48_256x192", (256, 192), sigma=2.0),
    "w48_384x288": _official_w(48, "w48_384x288", (384, 288), sigma=3.0),
    "tiny": config_from_official(_TINY_EXTRA, name="tiny", input_size=(256, 192), sigma=2.0),
}

ARCHS: tuple[str, ...] = tuple(_REGISTRY)


def get_config(arch: str) -> HRNetConfig:
    """The named config; raises KeyError listing the known names."""
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise KeyError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}") from None
