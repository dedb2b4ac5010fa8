"""COCO files for the CLI: detector boxes in (COCO detection results, or a plain mapping), keypoint results out."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pose_client.inputs import Box
from pose_client.models import PoseResult

PERSON_CATEGORY = 1
_TRAILING_DIGITS = re.compile(r"(\d+)$")


def image_id_for(path: Path) -> int | str:
    """COCO's id from the file name (000000000785.jpg -> 785, train2017_000000000036.jpg -> 36); else the stem."""
    match = _TRAILING_DIGITS.search(path.stem)
    return int(match.group(1)) if match else path.stem


def read_boxes_file(boxes_file: Path, images: Sequence[Path]) -> list[list[Box]]:
    """One box list per image, from either
    - COCO detection results, `[{"image_id": 785, "bbox": [x, y, w, h], "score": 0.99, "category_id": 1}, ...]`:
      an image with no person detection gets no boxes (nobody to look at), or
    - a mapping from file name (as given, its base name or its stem) to `[[x, y, w, h(, score)], ...]`, which must
      name every image."""
    data = json.loads(boxes_file.read_text())
    if isinstance(data, list):
        by_id: dict[int | str, list[Box]] = {}
        for detection in data:
            if detection.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY:
                continue
            box = [float(v) for v in detection["bbox"]] + [float(detection.get("score", 1.0))]
            by_id.setdefault(detection["image_id"], []).append(box)
        return [by_id.get(image_id_for(image), []) for image in images]
    if isinstance(data, dict):
        per_image = []
        for image in images:
            for key in (str(image), image.name, image.stem):
                if key in data:
                    per_image.append(data[key])
                    break
            else:
                raise ValueError(f"{boxes_file} has no boxes for {image} (give [] for an image with nobody)")
        return per_image
    raise ValueError(f"{boxes_file}: expected COCO detection results (a list) or a mapping from file name to boxes")


def keypoint_results(images: Sequence[Path], results: Sequence[PoseResult]) -> list[dict[str, Any]]:
    """COCO keypoint results: one entry per person, as pycocotools' loadRes and COCOeval expect."""
    return [{"image_id": image_id_for(image), "category_id": PERSON_CATEGORY,
             "keypoints": [round(v, 3) for v in person.coco_keypoints], "score": person.score}
            for image, result in zip(images, results, strict=True) for person in result.persons]
