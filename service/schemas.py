"""The API contract: request and response models. OpenAPI (/docs, /openapi.json) is generated from these."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. 'corrupt_image'.")
    message: str = Field(description="What went wrong, for humans.")


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str | None = None


class ImageInfo(BaseModel):
    width: int
    height: int


class ModelInfo(BaseModel):
    name: str
    arch: str
    trained: bool = Field(description="False for a random-init export: its keypoints are meaningless.")
    provider: str = Field(description="The ONNX Runtime execution provider really in use.")
    warning: str | None = None


class Keypoint(BaseModel):
    name: str
    x: float = Field(description="Image pixels.")
    y: float = Field(description="Image pixels.")
    score: float = Field(description="Heatmap maximum.")


class Person(BaseModel):
    box: list[float] = Field(description="[x, y, w, h] in image pixels.", min_length=4, max_length=4)
    box_score: float
    score: float = Field(description="Official rescoring: box score x mean of the keypoint scores above 0.2.")
    keypoints: list[Keypoint]
    coco_keypoints: list[float] = Field(description="COCO results layout: [x1, y1, s1, x2, y2, s2, ...].")


class PoseResponse(BaseModel):
    image: ImageInfo
    model: ModelInfo
    flip: bool
    decode: Literal["official", "msra", "dark", "udp"] = Field(
        "official", description="The test-time pipeline that ran: official (HRNet), or mmpose 1.x's msra, dark or "
        "udp; the request's `decode`, else the model card's codec.")
    persons: list[Person]
    timings_ms: dict[str, float] = Field(description="Per-stage latency: decode, preprocess, queue, inference, "
                                         "postprocess.")


class BatchItemResult(BaseModel):
    index: int
    ok: bool
    result: PoseResponse | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    model: ModelInfo
    results: list[BatchItemResult]


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
    decode_default: str = Field("official", description="The test-time pipeline run when a request does not say "
                                "(from the card's codec).")
    decode_allowed: list[str] = Field(["official", "msra", "dark", "udp"], description="The `decode` values "
                                      "this model accepts (a UDP-trained model: udp only).")
    detector: DetectorInfo | None = Field(
        None, description="The person detector run for requests without boxes; null when none is configured.")
    card: dict


class HealthResponse(BaseModel):
    status: str
    detail: str | None = None
