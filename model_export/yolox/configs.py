"""The YOLOX sizes as data: depth and width multipliers and the test input size of the official exps
(Megvii-BaseDetection/YOLOX exps/default/yolox_*.py; mmdetection's configs/yolox use the same factors)."""

from __future__ import annotations

from dataclasses import dataclass, replace

NUM_COCO_CLASSES = 80


@dataclass(frozen=True)
class YoloxConfig:
    name: str
    depth: float  # multiplies the number of CSP bottlenecks
    width: float  # multiplies every channel count
    input_size: tuple[int, int]  # (H, W) of the letterboxed test input
    num_classes: int = NUM_COCO_CLASSES

    @property
    def base_channels(self) -> int:
        return int(self.width * 64)

    @property
    def base_depth(self) -> int:
        return max(round(self.depth * 3), 1)

    @property
    def neck_depth(self) -> int:
        return round(3 * self.depth)

    def with_input_size(self, input_size: tuple[int, int]) -> YoloxConfig:
        """The same network at another input size (fully convolutional: each side a multiple of 32)."""
        if any(side <= 0 or side % 32 for side in input_size):
            raise ValueError(f"YOLOX input sides must be positive multiples of 32, got {list(input_size)}")
        return replace(self, input_size=(int(input_size[0]), int(input_size[1])))


YOLOX_CONFIGS: dict[str, YoloxConfig] = {c.name: c for c in (
    YoloxConfig("yolox_tiny", 0.33, 0.375, (416, 416)),
    YoloxConfig("yolox_s", 0.33, 0.50, (640, 640)),
    YoloxConfig("yolox_m", 0.67, 0.75, (640, 640)),
    YoloxConfig("yolox_l", 1.00, 1.00, (640, 640)),
    YoloxConfig("yolox_x", 1.33, 1.25, (640, 640)),
)}
YOLOX_ARCHS = tuple(YOLOX_CONFIGS)


def get_yolox_config(arch: str) -> YoloxConfig:
    try:
        return YOLOX_CONFIGS[arch]
    except KeyError:
        raise ValueError(f"unknown YOLOX arch {arch!r}; known: {', '.join(YOLOX_ARCHS)}") from None


def is_yolox_arch(arch: str | None) -> bool:
    return arch in YOLOX_CONFIGS
