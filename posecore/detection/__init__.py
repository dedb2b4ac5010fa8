"""The person detector stage: find every person in a bare photo before the pose model runs.

Pure pieces (letterbox and its inverse, YOLOX head decoding, NMS, the end2end form, the card) and
`PersonDetector`, the ONNX Runtime session around them. See README, "Person detector".
"""

from posecore.detection.backend import DEFAULT_MAX_BOXES, MIN_BOX_SIDE, PersonDetector
from posecore.detection.card import (
    DETECTOR_CARD_FORMAT,
    DetectorCard,
    DetectorLoadError,
    DetectorSource,
    read_detector_card,
)
from posecore.detection.letterbox import boxes_to_image, letterbox

__all__ = [
    "DEFAULT_MAX_BOXES",
    "DETECTOR_CARD_FORMAT",
    "MIN_BOX_SIDE",
    "DetectorCard",
    "DetectorLoadError",
    "DetectorSource",
    "PersonDetector",
    "boxes_to_image",
    "letterbox",
    "read_detector_card",
]
