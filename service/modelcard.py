"""The model card: the JSON written beside every exported ONNX file and read by the service.

One pydantic model is the contract between `model_export` (writer) and `service` (reader), so the two
cannot disagree on a field. A bare ONNX file without a card gets `ModelCard.official_defaults`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from service import coco

CARD_FORMAT = "hrnet-pose-model-card/1"
UNTRAINED_WARNING = (
    "UNTRAINED MODEL: this ONNX file holds randomly initialised weights. Its keypoints are meaningless. "
    "Export an official HRNet checkpoint to get real predictions (see README, 'Real weights')."
)


class InputSpec(BaseModel):
    name: str = "input"
    height: int
    width: int
    layout: str = "NCHW"
    dtype: str = "float32"
    color_order: str = Field("RGB", description="Channel order the network expects (RGB or BGR).")
    value_scale: float = Field(255.0, description="Pixels are divided by this before mean/std.")
    mean: tuple[float, float, float] = coco.IMAGENET_MEAN
    std: tuple[float, float, float] = coco.IMAGENET_STD


class OutputSpec(BaseModel):
    name: str = "heatmaps"
    height: int
    width: int
    num_keypoints: int = len(coco.KEYPOINT_NAMES)


class WeightsInfo(BaseModel):
    source: str = Field(description="'random-init' or the checkpoint the weights came from.")
    checkpoint_sha256: str | None = None
    seed: int | None = None


class ModelCard(BaseModel):
    format: str = CARD_FORMAT
    name: str
    arch: str
    trained: bool
    warning: str | None = None
    input: InputSpec
    output: OutputSpec
    keypoints: list[str] = list(coco.KEYPOINT_NAMES)
    flip_pairs: list[tuple[int, int]] = [tuple(p) for p in coco.FLIP_PAIRS]
    skeleton: list[tuple[int, int]] = [tuple(e) for e in coco.SKELETON]
    weights: WeightsInfo
    onnx_sha256: str | None = None
    opset: int | None = None
    dynamic_batch: bool = True
    versions: dict[str, str] = {}
    export_check: dict[str, float | int | str | list[int]] = {}

    @classmethod
    def official_defaults(cls, name: str, input_hw: tuple[int, int], heatmap_hw: tuple[int, int]) -> ModelCard:
        """Card for a bare ONNX file: the official RGB / ImageNet / COCO-17 conventions, training unknown."""
        return cls(
            name=name,
            arch="unknown",
            trained=False,
            warning="No model card found beside the ONNX file: assuming the official HRNet conventions "
            "(RGB, ImageNet mean/std, COCO-17 order); whether the weights are trained is unknown.",
            input=InputSpec(height=input_hw[0], width=input_hw[1]),
            output=OutputSpec(height=heatmap_hw[0], width=heatmap_hw[1]),
            weights=WeightsInfo(source="unknown"),
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        return cls.model_validate_json(path.read_text())


def card_path_for(onnx_path: Path) -> Path:
    """models/NAME.onnx -> models/NAME.json"""
    return onnx_path.with_suffix(".json")
