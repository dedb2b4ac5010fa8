"""COCO person-keypoint dataset for training HRNet, as the official JointsDataset/COCODataset builds samples.

One sample is one annotated person: the cleaned GT box -> center/scale (1.25 padding), optional half-body,
random scale / rotation / horizontal flip, the affine crop, and Gaussian heatmap targets with a weight per
joint. The box -> center/scale, the affine matrix, the normalisation and the Gaussian target are the
service's own functions (posecore.geometry, posecore.heatmaps), imported, so training sees exactly the crops
the service will feed the exported model.

Randomness: each sample draws from its own numpy Generator seeded by (seed, epoch, index), so a run is
reproducible whatever the number of DataLoader workers, and a resumed run redraws the same augmentations.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from posecore import coco
from posecore.geometry import boxes_to_centers_scales, get_affine_transform, normalize_crops
from posecore.heatmaps import gaussian_heatmaps
from posecore.modelcard import InputSpec

# Official dataset/coco.py: upper_body_ids = (0..10), everything else is the lower body.
UPPER_BODY_JOINTS: tuple[int, ...] = tuple(range(11))
# Official dataset/coco.py joints_weight (used with LOSS.USE_DIFFERENT_JOINTS_WEIGHT, off in the W32 config).
OFFICIAL_JOINT_WEIGHTS: tuple[float, ...] = (
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5,
)


class HeatmapNetConfig(Protocol):
    """What the samples need of a network's config (HRNetConfig, SimpleBaselineConfig): crop and heatmap sizes,
    joints and the target's sigma."""

    @property
    def input_size(self) -> tuple[int, int]: ...
    @property
    def heatmap_size(self) -> tuple[int, int]: ...
    @property
    def num_joints(self) -> int: ...
    @property
    def sigma(self) -> float: ...


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation; the defaults are the official W32/W48 COCO experiment's DATASET section."""

    scale_factor: float = 0.35  # scale *= clip(N(0,1) * f + 1, 1 - f, 1 + f)
    rotation_factor: float = 45.0  # degrees: clip(N(0,1) * f, -2f, 2f) ...
    rotation_prob: float = 0.6  # ... with this probability (hard-coded in the official code), else 0
    flip: bool = True
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8  # half-body only for persons with MORE than this many labelled joints
    half_body_scale: float = 1.5

    @classmethod
    def none(cls) -> Augmentation:
        """No augmentation: the fixed test-time crop of every person (for overfitting and checks)."""
        return cls(scale_factor=0.0, rotation_factor=0.0, rotation_prob=0.0, flip=False, half_body_prob=0.0)


@dataclass(frozen=True)
class PersonRecord:
    """One annotated person, as the official `_load_coco_keypoint_annotation_kernal` records it."""

    image_path: Path
    image_id: int
    annotation_id: int
    box: tuple[float, float, float, float]  # cleaned x, y, w, h
    center: np.ndarray = field(repr=False)  # float32 (2,)
    scale: np.ndarray = field(repr=False)  # float32 (2,), in units of 200 px, padded by 1.25
    joints: np.ndarray = field(repr=False)  # float64 (K, 2) image pixels
    visible: np.ndarray = field(repr=False)  # float64 (K,) 1 labelled (COCO v = 1 or 2), 0 unlabelled


def clean_box(bbox: Sequence[float], width: int, height: int, area: float) -> list[float] | None:
    """The official GT box sanitising: clip to the image (the last pixel is width - 1), drop empty boxes.

    Returns the cleaned [x, y, w, h], or None for an annotation the official loader skips (area <= 0 or a box
    that is empty after clipping).
    """
    x, y, w, h = (float(v) for v in bbox[:4])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1))
    if area > 0 and x2 >= x1 and y2 >= y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


def load_coco(annotation_file: str | os.PathLike):
    """pycocotools COCO, without its progress prints on stdout."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(annotation_file))


def load_person_records(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    aspect_ratio: float = 192 / 256,
    num_joints: int = len(coco.KEYPOINT_NAMES),
) -> list[PersonRecord]:
    """Every non-crowd person with at least one labelled keypoint, with the official box cleaning.

    Image paths are `image_dir / file_name` (file names may contain folders, as coco8-pose's do).
    """
    dataset = load_coco(annotation_file)
    person_ids = set(dataset.getCatIds(catNms=["person"])) or {1}
    records = []
    for image_id in dataset.getImgIds():
        image = dataset.loadImgs(image_id)[0]
        width, height = int(image["width"]), int(image["height"])
        for ann in dataset.loadAnns(dataset.getAnnIds(imgIds=image_id, iscrowd=False)):
            if ann["category_id"] not in person_ids:
                continue
            keypoints = np.asarray(ann.get("keypoints") or [0] * (3 * num_joints), dtype=np.float64)
            if keypoints.max(initial=0) == 0:  # official: persons without keypoint annotations are skipped
                continue
            box = clean_box(ann["bbox"], width, height, float(ann.get("area", 0)))
            if box is None:
                continue
            keypoints = keypoints.reshape(num_joints, 3)
            centers, scales = boxes_to_centers_scales(np.array([box]), aspect_ratio=aspect_ratio)
            records.append(PersonRecord(
                image_path=Path(image_dir) / image["file_name"],
                image_id=int(image_id),
                annotation_id=int(ann["id"]),
                box=(box[0], box[1], box[2], box[3]),
                center=centers[0],
                scale=scales[0],
                joints=keypoints[:, :2].copy(),
                visible=np.minimum(keypoints[:, 2], 1.0),  # official: v = 2 (visible) counts as 1
            ))
    return records


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 (H, W, 3) in the stored pixel orientation.

    As the official loader (cv2.IMREAD_IGNORE_ORIENTATION): COCO keypoints are annotated on the stored
    pixels, so an EXIF orientation tag must not rotate the image under its annotations.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fliplr_joints(
    joints: np.ndarray, visible: np.ndarray, image_width: int, flip_pairs: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Joints of the horizontally mirrored image: x -> width - 1 - x, left/right pairs swapped.

    As the official fliplr_joints, unlabelled joints come back as (0, 0) (joints * visible).
    """
    joints = np.array(joints, dtype=np.float64, copy=True)
    visible = np.array(visible, dtype=np.float64, copy=True)
    joints[:, 0] = image_width - joints[:, 0] - 1
    for left, right in flip_pairs:
        joints[[left, right]] = joints[[right, left]]
        visible[[left, right]] = visible[[right, left]]
    return joints * visible[:, None], visible


def half_body_center_scale(
    joints: np.ndarray,
    visible: np.ndarray,
    aspect_ratio: float,
    rng: np.random.Generator,
    upper_body: Sequence[int] = UPPER_BODY_JOINTS,
    scale_factor: float = 1.5,
    pixel_std: float = coco.PIXEL_STD,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Center/scale around the labelled joints of the upper or the lower body (official half_body_transform).

    Official quirk kept: the half is chosen with `randn() < 0.5` (a normal draw, not a uniform one), so the
    upper body wins about 69% of the time when it has more than two labelled joints. Returns None when the
    chosen half has fewer than two joints, and (unlike the official code, which would build a singular
    matrix) when those joints span no area.
    """
    labelled = np.asarray(visible) > 0
    in_upper = np.isin(np.arange(len(labelled)), np.asarray(upper_body))
    upper = np.flatnonzero(labelled & in_upper)
    lower = np.flatnonzero(labelled & ~in_upper)
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        selected = upper
    elif len(lower) > 2:
        selected = lower
    else:
        selected = upper
    if len(selected) < 2:
        return None
    points = np.asarray(joints, dtype=np.float32)[selected]
    center = points.mean(axis=0)
    w, h = (points.max(axis=0) - points.min(axis=0)).astype(np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    if not (w > 0 and h > 0):
        return None
    scale = np.array([w / pixel_std, h / pixel_std], dtype=np.float32) * np.float32(scale_factor)
    return center.astype(np.float32), scale


class CocoKeypointDataset(Dataset):
    """Samples for HRNet training: dict with 'input' float32 (3, H, W), 'target' float32 (K, h, w),
    'target_weight' float32 (K, 1), and 'meta' (center, scale, rotation, flipped, image size, heatmap-space
    joints, ids) for evaluation and checks.

    `augmentation=None` gives the test-time crop (no randomness). `joint_weights` (K,) multiplies the target
    weights (OFFICIAL_JOINT_WEIGHTS is the official table). `cache_images` keeps every decoded image in memory
    (per worker process): for the small sets of tests and smoke runs, never for COCO.
    """

    def __init__(
        self,
        records: Sequence[PersonRecord],
        config: HeatmapNetConfig,
        augmentation: Augmentation | None = None,
        joint_weights: Sequence[float] | None = None,
        seed: int = 0,
        flip_pairs: Sequence[Sequence[int]] = coco.FLIP_PAIRS,
        cache_images: bool = False,
    ) -> None:
        self.records = list(records)
        self.config = config
        self.augmentation = augmentation
        self.joint_weights = None if joint_weights is None else np.asarray(joint_weights, dtype=np.float32)
        if self.joint_weights is not None and self.joint_weights.shape != (config.num_joints,):
            raise ValueError(f"joint_weights needs {config.num_joints} values, got {self.joint_weights.shape}")
        self.seed = seed
        self.epoch = 0
        self.flip_pairs = [tuple(p) for p in flip_pairs]
        self.input_wh = (config.input_size[1], config.input_size[0])
        self.heatmap_wh = (config.heatmap_size[1], config.heatmap_size[0])
        self.aspect_ratio = self.input_wh[0] / self.input_wh[1]
        # The normalisation the exported model's card declares (InputSpec defaults), via the service's LUT.
        self.input_spec = InputSpec(height=config.input_size[0], width=config.input_size[1])
        self._images: dict[Path, np.ndarray] | None = {} if cache_images else None

    @classmethod
    def from_coco(cls, annotation_file: str | os.PathLike, image_dir: str | os.PathLike, config: HeatmapNetConfig,
                  **kwargs) -> CocoKeypointDataset:
        aspect = config.input_size[1] / config.input_size[0]
        records = load_person_records(annotation_file, image_dir, aspect, config.num_joints)
        return cls(records, config, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch's DataLoader iterator is created: augmentations differ per epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        sample = self.sample(index)
        sample["input"] = torch.from_numpy(sample["input"])
        sample["target"] = torch.from_numpy(sample["target"])
        sample["target_weight"] = torch.from_numpy(sample["target_weight"])
        return sample

    def _image(self, path: Path) -> np.ndarray:
        if self._images is None:
            return read_image_rgb(path)
        if path not in self._images:
            image = read_image_rgb(path)
            image.flags.writeable = False  # shared between samples: flip makes a view, never writes
            self._images[path] = image
        return self._images[path]

    def sample(self, index: int) -> dict:
        """The sample as numpy arrays (see the class docstring)."""
        record = self.records[index]
        image = self._image(record.image_path)
        joints, visible = record.joints.copy(), record.visible.copy()
        center, scale = record.center.copy(), record.scale.copy()
        rotation, flipped = 0.0, False
        aug = self.augmentation
        if aug is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            if visible.sum() > aug.half_body_min_joints and rng.random() < aug.half_body_prob:
                half = half_body_center_scale(joints, visible, self.aspect_ratio, rng,
                                              scale_factor=aug.half_body_scale)
                if half is not None:
                    center, scale = half
            s = aug.scale_factor
            scale = scale * np.float32(np.clip(rng.standard_normal() * s + 1, 1 - s, 1 + s))
            if rng.random() <= aug.rotation_prob:
                r = aug.rotation_factor
                rotation = float(np.clip(rng.standard_normal() * r, -2 * r, 2 * r))
            if aug.flip and rng.random() <= aug.flip_prob:
                image = image[:, ::-1]
                joints, visible = fliplr_joints(joints, visible, image.shape[1], self.flip_pairs)
                center[0] = image.shape[1] - center[0] - 1
                flipped = True

        trans = get_affine_transform(center, scale, self.input_wh, rotation_deg=rotation)
        crop = cv2.warpAffine(np.ascontiguousarray(image), trans, self.input_wh, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        spec = self.input_spec
        inputs = normalize_crops(crop[None], spec.mean, spec.std, spec.value_scale,
                                 bgr=spec.color_order == "BGR")[0]

        joints_input = joints @ trans[:, :2].T + trans[:, 2]  # image -> network input pixels
        stride = np.array([self.input_wh[0] / self.heatmap_wh[0], self.input_wh[1] / self.heatmap_wh[1]])
        joints_hm = joints_input / stride
        target, weight = gaussian_heatmaps(joints_hm, self.heatmap_wh, self.config.sigma, visible=visible)
        if self.joint_weights is not None:
            weight = weight * self.joint_weights
        return {
            "input": inputs,
            "target": target,
            "target_weight": weight[:, None].astype(np.float32),
            "meta": {
                "index": index,
                "image_id": record.image_id,
                "annotation_id": record.annotation_id,
                "center": np.asarray(center, dtype=np.float32),
                "scale": np.asarray(scale, dtype=np.float32),
                "rotation": rotation,
                "flipped": flipped,
                "image_width": image.shape[1],
                "joints_hm": joints_hm.astype(np.float32),
                "visible": visible.astype(np.float32),
            },
        }
