"""The detector card: NAME.json beside NAME.onnx, saying how to feed the detector and read its output.

The `fetch` command writes this exact form for the detectors it downloads; the service and the evaluation read
it. A bare ONNX file gets a card inferred from its input and output shapes (`posecore.detection.shapes`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from posecore.backend import ModelLoadError

DETECTOR_CARD_FORMAT = "pose-detector-card/1"
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_NMS_IOU = 0.45  # YOLOX's demo

# The 80 COCO detection classes in the order of YOLOX's (and mmdet's) class indices; 0 is the person.
COCO_CLASS_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

Layout = Literal["yolox", "end2end"]
# Which framework's test-time letterbox the weights were trained and evaluated with (posecore.detection.letterbox):
# "yolox": Megvii's `preproc` (size truncated, one ratio); "mmdet": mmdetection's Resize(keep_ratio) + Pad(114)
# (size rounded, a ratio per axis). A card without the field is an official YOLOX export.
Preprocessing = Literal["yolox", "mmdet"]


class DetectorLoadError(ModelLoadError):
    """The detector file (or its card) is missing or unusable; start-up stops with this one-line message."""


class DetectorSource(BaseModel):
    url: str | None = None
    sha256: str | None = Field(default=None, description="Full sha256 of the checkpoint the ONNX was exported from.")
    registry_name: str | None = Field(default=None, description="Name in `python -m model_export fetch --list`.")
    publisher: str | None = None
    box_ap: float | None = Field(default=None, description="Box AP its publisher reports (not measured here).")
    checkpoint_layout: str | None = Field(default=None, description="'megvii' or 'mmdet' key names.")
    seed: int | None = Field(default=None, description="Random-init seed of an UNTRAINED export.")


class DetectorCard(BaseModel):
    format: Literal["pose-detector-card/1"] = "pose-detector-card/1"
    name: str
    kind: Literal["detector"] = "detector"
    layout: Layout = Field(description="'yolox': raw head (1, A, 5 + C); 'end2end': dets (1, N, 5) + labels (1, N).")
    arch: str | None = Field(default=None, description="The exported architecture, e.g. yolox_s.")
    preprocessing: Preprocessing = Field(default="yolox", description="Whose letterbox: 'yolox' or 'mmdet'.")
    trained: bool = True
    warning: str | None = None
    input_size: tuple[int, int] = Field(description="Letterbox canvas [H, W] in pixels.")
    score_threshold: float = Field(default=DEFAULT_SCORE_THRESHOLD, ge=0.0, le=1.0)
    nms_iou: float = Field(default=DEFAULT_NMS_IOU, gt=0.0, le=1.0)
    class_names: list[str] = Field(default_factory=lambda: list(COCO_CLASS_NAMES), min_length=1)
    person_class: int = Field(default=0, ge=0)
    source: DetectorSource | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DetectorCard:
        if min(self.input_size) <= 0:
            raise ValueError(f"input_size must be positive, got {list(self.input_size)}")
        if self.preprocessing == "mmdet" and self.input_size[0] != self.input_size[1]:
            raise ValueError("mmdet preprocessing (Resize keep_ratio + Pad to square) needs a square input_size, got "
                             f"{list(self.input_size)}")
        if self.person_class >= len(self.class_names):
            raise ValueError(f"person_class {self.person_class} is not one of the {len(self.class_names)} classes")
        return self

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")


def card_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def read_detector_card(onnx_path: Path) -> DetectorCard | None:
    """The card beside `onnx_path`, or None when there is none; a broken card raises DetectorLoadError."""
    path = card_path(onnx_path)
    if not path.is_file():
        return None
    try:
        text = path.read_text()
        card_format = json.loads(text).get("format")
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectorLoadError(f"cannot read detector card {path}: {exc}") from exc
    except (ValueError, AttributeError):
        card_format = None  # not a JSON object: the validation below says so
    if isinstance(card_format, str) and card_format != DETECTOR_CARD_FORMAT and "detector" not in card_format:
        raise DetectorLoadError(f"{onnx_path} is not a detector: its card {path.name} is a {card_format!r} card")
    try:
        return DetectorCard.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "card"
        raise DetectorLoadError(f"invalid detector card {path}: {where}: {first['msg']}") from exc
