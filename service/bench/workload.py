"""Real photos with their person boxes (../shared/data/people), split into single- and multi-person."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PEOPLE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "people"


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    boxes: list[list[float]]


def load_photos(people_dir: Path = DEFAULT_PEOPLE_DIR, max_boxes: int = 20) -> tuple[list[Photo], list[Photo]]:
    """(single-person photos, multi-person photos); crowds are capped at `max_boxes` boxes."""
    index = json.loads((people_dir / "boxes.json").read_text())
    single: list[Photo] = []
    multi: list[Photo] = []
    for entry in index["images"]:
        boxes = [[round(v, 2) for v in b] for b in entry["person_boxes_xywh"]][:max_boxes]
        photo = Photo(entry["file"], (people_dir / entry["file"]).read_bytes(), boxes)
        (single if len(boxes) == 1 else multi).append(photo)
    if not single or not multi:
        raise SystemExit(f"{people_dir} needs photos with one and with several person boxes")
    return single, multi
