"""The annotation, detection and image files the CLIs read (evaluate, quantize), checked before any work.

A file that does not fit raises `InputDataError` naming the file and the entry (`images[3].file_name: expected a
string, got a number`), so a CLI prints one line instead of a KeyError/TypeError traceback from deep inside
pycocotools or numpy. File names are refused when they would leave the image folder (`../../etc/passwd`, an
absolute path): an annotation file is data, and data must not choose which of the machine's files are read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from posecore.errors import PoseError

NUM_KEYPOINTS = 17


class InputDataError(ValueError):
    """An annotation, detection or image file that cannot be used; the message says which and why."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _expect(condition: bool, where: str, wanted: str, value: Any) -> None:
    if not condition:
        raise InputDataError(f"{where}: expected {wanted}, got {_kind(value)}")


def _obj(value: Any, where: str) -> dict[str, Any]:
    _expect(isinstance(value, dict), where, "an object", value)
    return value


def _list(value: Any, where: str) -> list[Any]:
    _expect(isinstance(value, list), where, "a list", value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(data: dict[str, Any], key: str, where: str) -> int:
    value = _field(data, key, where)
    _expect(isinstance(value, int) and not isinstance(value, bool), _at(where, key), "an integer", value)
    return value


def _number(data: dict[str, Any], key: str, where: str) -> float:
    value = _field(data, key, where)
    _expect(_is_number(value), _at(where, key), "a number", value)
    return float(value)


def _numbers(value: Any, where: str, length: int | None = None, at_least: int = 0) -> list[float]:
    items = _list(value, where)
    if (length is not None and len(items) != length) or len(items) < at_least:
        count = f"{length}" if length is not None else f"at least {at_least}"
        raise InputDataError(f"{where}: expected {count} numbers, got {len(items)} items")
    for i, item in enumerate(items):
        _expect(_is_number(item), f"{where}[{i}]", "a number", item)
    return [float(item) for item in items]


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _field(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise InputDataError(f"{_at(where, key)}: missing")
    return data[key]


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputDataError(f"cannot read {what} {path}: {error}") from None


def image_path(images_dir: Path, file_name: Any, where: str) -> Path:
    """`images_dir / file_name`, refused unless `file_name` is a relative path that stays inside the folder
    (sub-folders are fine: coco8-pose's names are `images/train/...`)."""
    _expect(isinstance(file_name, str), where, "a file name", file_name)
    parts = PurePosixPath(file_name).parts
    if (not file_name or ".." in parts or PurePosixPath(file_name).is_absolute()
            or PureWindowsPath(file_name).is_absolute() or PureWindowsPath(file_name).drive):
        raise InputDataError(f"{where}: {file_name[:200]!r} is not a file name inside the image folder "
                             f"{images_dir} (absolute paths and '..' are refused)")
    return images_dir / file_name


def check_coco_keypoints(data: Any, images_dir: Path, where: str = "") -> None:
    """What evaluation (pycocotools COCO + COCOeval keypoints, the training loader) reads of a COCO file."""
    top = _obj(data, where or "the file")
    for key in ("images", "annotations", "categories"):
        _list(_field(top, key, where), _at(where, key))
    for i, category in enumerate(top["categories"]):
        _int(_obj(category, _at(where, f"categories[{i}]")), "id", _at(where, f"categories[{i}]"))
    for i, image in enumerate(top["images"]):
        at = _at(where, f"images[{i}]")
        _int(_obj(image, at), "id", at)
        image_path(images_dir, _field(image, "file_name", at), f"{at}.file_name")
        for key in ("width", "height"):
            if not _number(image, key, at) > 0:
                raise InputDataError(f"{at}.{key}: must be positive")
    for i, ann in enumerate(top["annotations"]):
        at = _at(where, f"annotations[{i}]")
        _obj(ann, at)
        for key in ("id", "image_id", "category_id", "num_keypoints"):
            _int(ann, key, at)
        _number(ann, "area", at)
        _numbers(_field(ann, "bbox", at), f"{at}.bbox", length=4)
        _numbers(_field(ann, "keypoints", at), f"{at}.keypoints", length=3 * NUM_KEYPOINTS)


def check_coco_boxes(data: dict[str, Any], images_dir: Path, where: str = "") -> None:
    """What calibration reads of a COCO file: images (id, file_name) and annotations (image_id, bbox)."""
    for i, category in enumerate(_list(data.get("categories", []), _at(where, "categories"))):
        _obj(category, _at(where, f"categories[{i}]"))
    for i, image in enumerate(_list(_field(data, "images", where), _at(where, "images"))):
        at = _at(where, f"images[{i}]")
        _int(_obj(image, at), "id", at)
        image_path(images_dir, _field(image, "file_name", at), f"{at}.file_name")
    for i, ann in enumerate(_list(_field(data, "annotations", where), _at(where, "annotations"))):
        at = _at(where, f"annotations[{i}]")
        _int(_obj(ann, at), "image_id", at)
        _numbers(_field(ann, "bbox", at), f"{at}.bbox", at_least=4)


def check_boxes_index(data: dict[str, Any], images_dir: Path, where: str = "") -> None:
    """The ../shared/data/people index: images[] of {file, person_boxes_xywh: [[x, y, w, h], ...]}."""
    for i, image in enumerate(_list(_field(data, "images", where), _at(where, "images"))):
        at = _at(where, f"images[{i}]")
        image_path(images_dir, _field(_obj(image, at), "file", at), f"{at}.file")
        for j, box in enumerate(_list(image.get("person_boxes_xywh", []), f"{at}.person_boxes_xywh")):
            _numbers(box, f"{at}.person_boxes_xywh[{j}]", length=4)


def check_detections(data: Any, where: str = "") -> None:
    """COCO detection results: a list of {image_id, bbox[, score, category_id]}."""
    for i, detection in enumerate(_list(data, where or "the file")):
        at = f"{where}[{i}]"
        _int(_obj(detection, at), "image_id", at)
        _numbers(_field(detection, "bbox", at), f"{at}.bbox", at_least=4)
        if "score" in detection:
            _number(detection, "score", at)
        if "category_id" in detection:
            _int(detection, "category_id", at)


def check_evaluation_files(annotations: Path, images_dir: Path, detections: Path | None = None) -> None:
    """The files of `python -m model_export evaluate`: COCO keypoint annotations and optional detections."""
    for path, what, check in ((annotations, "annotation file", lambda data: check_coco_keypoints(data, images_dir)),
                              (detections, "detections file", check_detections)):
        if path is None:
            continue
        data = read_json(path, what)
        try:
            check(data)
        except InputDataError as error:
            raise InputDataError(f"{what} {path}: {error}") from None


@contextlib.contextmanager
def readable_image(path: Path) -> Iterator[None]:
    """Turns an image that cannot be read or decoded into InputDataError naming the file."""
    try:
        yield
    except PoseError as error:
        raise InputDataError(f"image {path}: {error.code}: {error.message}") from None
    except OSError as error:
        raise InputDataError(f"image {path}: {error.strerror or error}") from None
