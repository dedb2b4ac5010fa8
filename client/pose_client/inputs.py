"""What callers hand in (a path, bytes or a file object; boxes as sequences) -> the HTTP request's parts."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Union

from pose_client.options import PoseOptions

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
Box = Sequence[float]  # [x, y, w, h] or [x, y, w, h, score] (or x1, y1, x2, y2 with box_format="xyxy")


def read_image(image: ImageInput) -> bytes:
    """The encoded image file's bytes. Read once: a retry resends the same bytes."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("a file object given as image must be opened in binary mode ('rb')")
        return bytes(data)
    raise TypeError(f"image must be a path, bytes or a binary file object, not {type(image).__name__}")


def boxes_json(boxes: Sequence[Box] | None) -> str | None:
    """None: the whole image is one person (the field is left out); []: nobody."""
    if boxes is None:
        return None
    return json.dumps([[float(v) for v in box] for box in boxes])


def pose_form(image: bytes, boxes: Sequence[Box] | None,
              options: PoseOptions) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """Multipart fields and files of /v1/pose and /v1/pose/render (multipart keeps long box lists off the URL)."""
    fields = options.form_fields()
    encoded = boxes_json(boxes)
    if encoded is not None:
        fields["boxes"] = encoded
    return fields, {"image": ("image", image, "application/octet-stream")}


def boxes_per_image(count: int, boxes: Sequence[Sequence[Box] | None] | None) -> list[Sequence[Box] | None]:
    """pose_many's `boxes`: None for every image, or exactly one entry (None or a box list) per image."""
    if boxes is None:
        return [None] * count
    if len(boxes) != count:
        raise ValueError(f"boxes needs one entry per image ({count}), got {len(boxes)}")
    return list(boxes)
