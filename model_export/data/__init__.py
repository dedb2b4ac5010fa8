"""COCO person-keypoint training data: records from annotation files, augmentation, heatmap targets."""

from model_export.data.dataset import (
    OFFICIAL_JOINT_WEIGHTS,
    Augmentation,
    CocoKeypointDataset,
    PersonRecord,
    clean_box,
    fliplr_joints,
    half_body_center_scale,
    load_person_records,
)

__all__ = [
    "OFFICIAL_JOINT_WEIGHTS",
    "Augmentation",
    "CocoKeypointDataset",
    "PersonRecord",
    "clean_box",
    "fliplr_joints",
    "half_body_center_scale",
    "load_person_records",
]
