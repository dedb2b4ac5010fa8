"""Real person crops for calibration and for the held-out agreement check, made by the service's own code.

Person boxes come from an annotations JSON: COCO (`images[].file_name`, `annotations[].bbox`, crowd boxes skipped)
or the `people` index of ../shared/data (`images[].file`, `images[].person_boxes_xywh`). Each image is decoded by
`posecore.imaging.decode_image` and its boxes go through the service's own `PoseCodec.crops` (box -> center/scale
-> affine crop -> normalise), so calibration sees exactly what the served model sees. Images, not crops, are
split into calibration and held-out sets, so no photo's persons land on both sides.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from model_export.data.validation import InputDataError, check_boxes_index, check_coco_boxes
from posecore.boxes import parse_boxes
from posecore.codec import PoseCodec
from posecore.errors import PoseError
from posecore.imaging import LOCAL_MAX_IMAGE_BYTES, LOCAL_MAX_IMAGE_PIXELS, decode_image
from posecore.modelcard import ModelCard

# Boxes under this many pixels on a side are label noise rather than persons a caller would send.
MIN_BOX_SIDE = 8.0


class CalibrationDataError(ValueError):
    """The annotations or images cannot give calibration crops; the message says why."""


@dataclass(frozen=True)
class AnnotatedImage:
    path: Path
    boxes_xywh: np.ndarray  # float64 (N, 4)


@dataclass
class CropSet:
    """Normalised network inputs with what maps their heatmaps back to image pixels."""

    inputs: np.ndarray  # float32 (N, 3, H, W)
    centers: np.ndarray  # float32 (N, 2)
    scales: np.ndarray  # float32 (N, 2)
    images: list[str]  # the photos these crops came from

    def __len__(self) -> int:
        return len(self.inputs)

    def describe(self) -> dict[str, Any]:
        return {"crops": len(self), "photos": len(self.images)}


def read_person_boxes(annotations: Path, images_dir: Path) -> list[AnnotatedImage]:
    """Images that have at least one usable person box, in file order."""
    try:
        data = json.loads(annotations.read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationDataError(f"cannot read annotations {annotations}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CalibrationDataError(f"{annotations}: expected a JSON object with an 'images' list")
    try:  # every entry's types, and file names that stay inside the image folder
        (check_coco_boxes if "annotations" in data else check_boxes_index)(data, images_dir)
    except InputDataError as exc:
        raise CalibrationDataError(f"{annotations}: {exc}") from None
    if "annotations" in data:
        entries = _coco_boxes(data)
    else:
        entries = [(image["file"], image.get("person_boxes_xywh", [])) for image in data["images"]]
    out = []
    for file_name, boxes in entries:
        array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
        usable = array[(array[:, 2] >= MIN_BOX_SIDE) & (array[:, 3] >= MIN_BOX_SIDE)]
        if len(usable):
            out.append(AnnotatedImage(images_dir / file_name, usable))
    if not out:
        raise CalibrationDataError(f"{annotations}: no person box of at least {MIN_BOX_SIDE:g} px")
    return out


def _coco_boxes(data: dict[str, Any]) -> list[tuple[str, list[list[float]]]]:
    person_ids = {c["id"] for c in data.get("categories", []) if c.get("name") == "person"}
    boxes: dict[int, list[list[float]]] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) or (person_ids and ann.get("category_id") not in person_ids):
            continue
        boxes.setdefault(ann["image_id"], []).append([float(v) for v in ann["bbox"][:4]])
    return [(image["file_name"], boxes.get(image["id"], [])) for image in data["images"]]


def split_images(images: Sequence[AnnotatedImage], held_out_fraction: float,
                 seed: int) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """(calibration images, held-out images): a seeded shuffle of whole photos. Both sides get at least one
    photo when there are two or more; a fraction of 0 holds nothing out."""
    if not 0.0 <= held_out_fraction < 1.0:
        raise CalibrationDataError(f"held-out fraction must be in [0, 1), got {held_out_fraction}")
    order = np.random.default_rng(seed).permutation(len(images))
    held = round(len(images) * held_out_fraction)
    if held_out_fraction > 0 and len(images) >= 2:
        held = min(max(held, 1), len(images) - 1)
    shuffled = [images[i] for i in order]
    return shuffled[held:], shuffled[:held]


def make_crops(images: Sequence[AnnotatedImage], card: ModelCard, max_crops: int, seed: int) -> CropSet:
    """Up to `max_crops` person crops, a seeded sample over all boxes of `images`, preprocessed as served."""
    pairs = [(i, j) for i, image in enumerate(images) for j in range(len(image.boxes_xywh))]
    if not pairs:
        raise CalibrationDataError("no person boxes to crop")
    chosen = sorted(np.random.default_rng(seed).permutation(len(pairs))[:max_crops].tolist())
    by_image: dict[int, list[int]] = {}
    for index in chosen:
        i, j = pairs[index]
        by_image.setdefault(i, []).append(j)
    codec = PoseCodec(card)  # the service's own crops: one code path, no copy to drift
    inputs, centers, scales, names = [], [], [], []
    for i, box_indices in by_image.items():
        image = _read_rgb(images[i].path)
        rows = parse_boxes(images[i].boxes_xywh[box_indices])
        assert rows is not None
        try:
            prepared = codec.crops(image, rows, flip=False)
        except PoseError as error:
            raise CalibrationDataError(f"{images[i].path}: {error.message}") from None
        inputs.append(prepared.inputs)
        centers.append(prepared.centers)
        scales.append(prepared.scales)
        names.append(images[i].path.name)
    return CropSet(np.concatenate(inputs), np.concatenate(centers), np.concatenate(scales), names)


def _read_rgb(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CalibrationDataError(f"cannot read calibration image {path}: {exc.strerror}") from None
    try:
        return decode_image(data, LOCAL_MAX_IMAGE_BYTES, LOCAL_MAX_IMAGE_PIXELS)
    except PoseError as exc:
        raise CalibrationDataError(f"calibration image {path}: {exc.code}: {exc.message}") from None


def batches(inputs: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """`inputs` in batches of exactly `batch_size` (a fixed-batch model takes no other); the last batch is
    filled up with the first crops again rather than dropped, so every crop is seen."""
    if len(inputs) == 0:
        return []
    count = -(-len(inputs) // batch_size)
    index = np.arange(count * batch_size) % len(inputs)
    return [np.ascontiguousarray(inputs[index[k * batch_size:(k + 1) * batch_size]]) for k in range(count)]


class CropReader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over ready-made batches. `set_range` lets quantize_static collect
    statistics a slice at a time (CalibStridedMinMax), so a large net's activations never all sit in memory."""

    def __init__(self, input_name: str, batch_list: list[np.ndarray]) -> None:
        self.input_name = input_name
        self.batch_list = batch_list
        self.start, self.end = 0, len(batch_list)
        self._iterator: Iterator[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.batch_list)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, end_index
        self._iterator = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iterator is None:
            self._iterator = iter(self.batch_list[self.start:self.end])
        batch = next(self._iterator, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iterator = None
