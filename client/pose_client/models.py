"""The service's answers as dataclasses whose fields mirror its JSON (README "API"). Unknown fields are ignored,
so a newer service that adds fields does not break an older client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Keypoint:
    name: str
    x: float  # image pixels
    y: float  # image pixels
    score: float  # heatmap maximum

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Keypoint:
        return cls(str(data["name"]), float(data["x"]), float(data["y"]), float(data["score"]))


@dataclass(frozen=True)
class Person:
    box: tuple[float, float, float, float]  # x, y, w, h in image pixels
    box_score: float
    score: float  # box score x mean of the keypoint scores above 0.2 (the official rescoring)
    keypoints: list[Keypoint]
    coco_keypoints: list[float]  # [x1, y1, s1, x2, y2, s2, ...], the COCO results layout

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Person:
        x, y, w, h = (float(v) for v in data["box"])
        return cls(
            box=(x, y, w, h),
            box_score=float(data["box_score"]),
            score=float(data["score"]),
            keypoints=[Keypoint.from_json(k) for k in data["keypoints"]],
            coco_keypoints=[float(v) for v in data["coco_keypoints"]],
        )


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int


@dataclass(frozen=True)
class ModelInfo:
    name: str
    arch: str
    trained: bool  # False for a random-init export: its keypoints are meaningless
    provider: str
    warning: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(str(data["name"]), str(data["arch"]), bool(data["trained"]), str(data["provider"]),
                   data.get("warning"))


@dataclass(frozen=True)
class PoseResult:
    """One image's answer from POST /v1/pose."""

    image: ImageSize
    model: ModelInfo
    flip: bool
    persons: list[Person]
    timings_ms: dict[str, float]
    request_id: str | None = None  # the X-Request-ID the service answered with
    decode: str | None = None  # the test-time pipeline that ran (official, msra, dark, udp); None: an older service

    @classmethod
    def from_json(cls, data: dict[str, Any], request_id: str | None = None) -> PoseResult:
        return cls(
            image=ImageSize(int(data["image"]["width"]), int(data["image"]["height"])),
            model=ModelInfo.from_json(data["model"]),
            flip=bool(data["flip"]),
            persons=[Person.from_json(p) for p in data["persons"]],
            timings_ms={str(k): float(v) for k, v in data.get("timings_ms", {}).items()},
            request_id=request_id,
            decode=data.get("decode"),
        )


@dataclass(frozen=True)
class RenderedImage:
    """POST /v1/pose/render: the photo with the skeletons drawn."""

    content: bytes
    media_type: str  # image/jpeg or image/png
    trained: bool | None  # X-Model-Trained; None when the header is absent
    timings_ms: dict[str, float] = field(default_factory=dict)  # from Server-Timing
    request_id: str | None = None
    decode: str | None = None  # X-Pose-Decode: the test-time pipeline that ran
