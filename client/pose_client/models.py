"""The service's answers as dataclasses whose fields mirror its JSON (README "API"). Unknown fields are ignored,
so a newer service that adds fields does not break an older client; a missing or wrong-typed known field raises
`pose_client.fields.MalformedAnswer` naming it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pose_client.fields import array, boolean, integer, number, obj, string
from pose_client.fields import field as get


@dataclass(frozen=True)
class Keypoint:
    name: str
    x: float  # image pixels
    y: float  # image pixels
    score: float  # heatmap maximum

    @classmethod
    def from_json(cls, data: Any, where: str = "keypoint") -> Keypoint:
        data = obj(data, where)
        return cls(string(get(data, "name", where), f"{where}.name"), number(get(data, "x", where), f"{where}.x"),
                   number(get(data, "y", where), f"{where}.y"), number(get(data, "score", where), f"{where}.score"))


@dataclass(frozen=True)
class Person:
    box: tuple[float, float, float, float]  # x, y, w, h in image pixels
    box_score: float
    score: float  # box score x mean of the keypoint scores above 0.2 (the official rescoring)
    keypoints: list[Keypoint]
    coco_keypoints: list[float]  # [x1, y1, s1, x2, y2, s2, ...], the COCO results layout

    @classmethod
    def from_json(cls, data: Any, where: str = "person") -> Person:
        data = obj(data, where)
        box = array(get(data, "box", where), f"{where}.box", length=4)
        x, y, w, h = (number(v, f"{where}.box[{i}]") for i, v in enumerate(box))
        keypoints = array(get(data, "keypoints", where), f"{where}.keypoints")
        coco_keypoints = array(get(data, "coco_keypoints", where), f"{where}.coco_keypoints")
        return cls(
            box=(x, y, w, h),
            box_score=number(get(data, "box_score", where), f"{where}.box_score"),
            score=number(get(data, "score", where), f"{where}.score"),
            keypoints=[Keypoint.from_json(k, f"{where}.keypoints[{i}]") for i, k in enumerate(keypoints)],
            coco_keypoints=[number(v, f"{where}.coco_keypoints[{i}]") for i, v in enumerate(coco_keypoints)],
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
    def from_json(cls, data: Any, where: str = "model") -> ModelInfo:
        data = obj(data, where)
        warning = data.get("warning")
        return cls(string(get(data, "name", where), f"{where}.name"), string(get(data, "arch", where), f"{where}.arch"),
                   boolean(get(data, "trained", where), f"{where}.trained"),
                   string(get(data, "provider", where), f"{where}.provider"),
                   None if warning is None else string(warning, f"{where}.warning"))


@dataclass(frozen=True)
class PoseResult:
    """One image's answer from POST /v1/pose."""

    image: ImageSize
    model: ModelInfo
    flip: bool
    persons: list[Person]
    timings_ms: dict[str, float]
    request_id: str | None = None  # the X-Request-ID the service answered with

    @classmethod
    def from_json(cls, data: Any, request_id: str | None = None) -> PoseResult:
        data = obj(data, "")
        image = obj(get(data, "image", ""), "image")
        persons = array(get(data, "persons", ""), "persons")
        timings = obj(data.get("timings_ms", {}), "timings_ms")
        return cls(
            image=ImageSize(integer(get(image, "width", "image"), "image.width"),
                            integer(get(image, "height", "image"), "image.height")),
            model=ModelInfo.from_json(get(data, "model", "")),
            flip=boolean(get(data, "flip", ""), "flip"),
            persons=[Person.from_json(p, f"persons[{i}]") for i, p in enumerate(persons)],
            timings_ms={k: number(v, f"timings_ms.{k}") for k, v in timings.items()},
            request_id=request_id,
        )


@dataclass(frozen=True)
class RenderedImage:
    """POST /v1/pose/render: the photo with the skeletons drawn."""

    content: bytes
    media_type: str  # image/jpeg or image/png
    trained: bool | None  # X-Model-Trained; None when the header is absent
    timings_ms: dict[str, float] = field(default_factory=dict)  # from Server-Timing
    request_id: str | None = None
