"""PoseOptions: how the service looks at each image, one object through every call.

A mirror of the service's contract (posecore/contract.py `PoseOptions`), field for field (tests/test_contract.py
holds the two together): this package stays httpx-only, so callers never inherit the service's pydantic,
numpy or ONNX Runtime. A new option is one field here; it is sent as a form field of the same name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

BOX_FORMATS = ("xywh", "xyxy")


@dataclass(frozen=True)
class PoseOptions:
    """None: the service's default (its settings)."""

    box_format: str = "xywh"  # the layout of the boxes given: x, y, w, h or x1, y1, x2, y2
    flip: bool | None = None  # flip test (2x compute, ~+1 AP)
    detect: bool | None = None  # without boxes: run the service's person detector (when it has one)

    def __post_init__(self) -> None:
        if self.box_format not in BOX_FORMATS:
            raise ValueError(f"box_format must be one of {BOX_FORMATS}, not {self.box_format!r}")

    def replace(self, **changes: object) -> PoseOptions:
        """A copy with some options changed, e.g. `options.replace(flip=False)`."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def form_fields(self) -> dict[str, str]:
        """The options as the service's text fields; a None option is left out (the service decides)."""
        fields: dict[str, str] = {}
        for option in dataclasses.fields(self):
            value = getattr(self, option.name)
            if value is None:
                continue
            fields[option.name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return fields
