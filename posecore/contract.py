"""The /v1 contract, in one place and pydantic only: the request options and the response types.

The service builds its answers from these types (service/responses.py) and documents them in OpenAPI from them;
its request field table (service/request.py) takes each option's description from `PoseOptions`. pose_client
keeps an httpx-only mirror of both (client/pose_client/options.py, models.py), held field for field to these by
tests/test_contract.py. Nothing here imports numpy, ONNX Runtime or the web framework.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BoxFormat = Literal["xywh", "xyxy"]
BOX_FORMATS: tuple[str, ...] = ("xywh", "xyxy")
DEFAULT_MAX_BOXES = 100  # person boxes per image: the service's POSE_MAX_BOXES default, its detector's cap
BOXES_DESCRIPTION = ("JSON list of person boxes, e.g. [[10, 20, 100, 200], [50, 60, 80, 160, 0.9]] (5th value: box "
                     "score). Omitted: the detector finds the people, or without one the whole image is one person; "
                     "[]: nobody.")


class Stage(str, Enum):
    """The pipeline's stages, in order: the keys of `timings_ms`, of the Server-Timing header and of the
    pose_stage_duration_seconds series. `detect` runs only for an image without boxes on a service with a
    person detector."""

    DECODE = "decode"
    VIDEO = "video"  # a video frame's decoding (the /v1/pose/video lines and summary), in place of decode
    DETECT = "detect"
    PREPROCESS = "preprocess"
    QUEUE = "queue"
    INFERENCE = "inference"
    POSTPROCESS = "postprocess"

    def __str__(self) -> str:  # the name on the wire, in f-strings and labels alike (as StrEnum, 3.11+)
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# -- request ------------------------------------------------------------------------------------------------
class PoseOptions(BaseModel):
    """How to look at an image, beside its person boxes (`boxes`, one list per image, BOXES_DESCRIPTION).

    In a batch call these are one value per call; None means the service decides (its settings' default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    box_format: BoxFormat = Field("xywh", description="Box layout: xywh or xyxy.")
    flip: bool | None = Field(None, description="Flip test (2x compute, ~+1 AP); default from POSE_FLIP_TEST.")
    detect: bool | None = Field(None, description="Without boxes: run the person detector (default true); false: "
                                "the whole image is one person.")


# -- response -----------------------------------------------------------------------------------------------
class _Answer(BaseModel):
    # A NaN or infinity that slipped into an answer is our fault (500), never invalid or silently-null JSON.
    model_config = ConfigDict(allow_inf_nan=False)


class ErrorBody(_Answer):
    code: str = Field(description="Stable machine-readable error code, e.g. 'corrupt_image'.")
    message: str = Field(description="What went wrong, for humans.")


class ErrorResponse(_Answer):
    error: ErrorBody
    request_id: str | None = None


class ImageInfo(_Answer):
    width: int
    height: int


class ModelInfo(_Answer):
    name: str
    arch: str
    trained: bool = Field(description="False for a random-init export: its keypoints are meaningless.")
    provider: str = Field(description="The ONNX Runtime execution provider really in use.")
    warning: str | None = None


class Keypoint(_Answer):
    name: str
    x: float = Field(description="Image pixels.")
    y: float = Field(description="Image pixels.")
    score: float = Field(description="Heatmap maximum.")


class Person(_Answer):
    box: list[float] = Field(description="[x, y, w, h] in image pixels.", min_length=4, max_length=4)
    box_score: float
    score: float = Field(description="Official rescoring: box score x mean of the keypoint scores above 0.2.")
    keypoints: list[Keypoint]
    coco_keypoints: list[float] = Field(description="COCO results layout: [x1, y1, s1, x2, y2, s2, ...].")


class PoseResponse(_Answer):
    image: ImageInfo
    model: ModelInfo
    flip: bool
    persons: list[Person]
    timings_ms: dict[str, float] = Field(description=f"Per-stage latency: {', '.join(map(str, Stage))}.")


class BatchItemResult(_Answer):
    index: int
    ok: bool
    result: PoseResponse | None = None
    error: ErrorBody | None = None


class BatchResponse(_Answer):
    model: ModelInfo
    results: list[BatchItemResult]
