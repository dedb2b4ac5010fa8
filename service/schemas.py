"""The answers of the service's own routes (model card, health). OpenAPI (/docs, /openapi.json) is generated from
these and from the /v1 contract types (posecore/contract.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DetectorInfo(BaseModel):
    name: str
    layout: str = Field(description="yolox (raw head, decoded here) or end2end (boxes from the model).")
    input_size: list[int] = Field(description="[H, W] of the letterboxed input.")
    score_threshold: float
    nms_iou: float
    max_boxes: int
    provider: str
    card_found: bool
    warning: str | None = None
    card: dict


class ModelCardResponse(BaseModel):
    """The model card of the served ONNX file plus what the runtime made of it."""

    name: str
    arch: str
    trained: bool
    warning: str | None
    precision: Literal["fp32", "fp16", "int8"] = Field(
        description="Arithmetic of the served weights, from the card: fp32, fp16, or int8 for a quantized model "
        "(its card's `quantization` says how it was calibrated and how closely it agrees with its fp32 parent).")
    provider: str
    provider_ok: bool
    input: dict
    output: dict
    keypoints: list[str]
    flip_pairs: list[list[int]]
    skeleton: list[list[int]]
    batch_sizes: list[int]
    card_found: bool
    detector: DetectorInfo | None = Field(
        None, description="The person detector run for requests without boxes; null when none is configured.")
    card: dict


class HealthResponse(BaseModel):
    status: str
    detail: str | None = None
