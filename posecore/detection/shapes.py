"""What a detector ONNX file's inputs and outputs say: its layout, input size, batch axis and output names.

Works on (name, shape) pairs as ONNX Runtime reports them (a dimension is an int, or a str/None when dynamic),
so it is testable without a session. A bare file (no card) is recognised from these shapes alone:
  images (1|N, 3, S_h, S_w) + one output (1|N, A, 5 + C) with A = the stride-8/16/32 cell count -> yolox;
  images + dets (1|N, M, 5) + labels (1|N, M) -> end2end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from posecore.detection.card import COCO_CLASS_NAMES, DetectorCard, DetectorLoadError, Layout
from posecore.detection.yolox import num_anchors

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class DetectorIO:
    input_name: str
    input_hw: tuple[int, int]
    fixed_batch: int | None  # the batch axis' fixed size (the official YOLOX export: 1), None when dynamic
    output_names: tuple[str, ...]  # yolox: (head,); end2end: (dets, labels)


def _fixed(dim: Dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _end2end_outputs(outputs: list[TensorInfo]) -> tuple[str, str] | None:
    if len(outputs) != 2:
        return None
    by_name = {o.name: o for o in outputs}
    if "dets" in by_name and "labels" in by_name:
        dets, labels = by_name["dets"], by_name["labels"]
    else:  # exporters that renamed them: tell them apart by rank
        ranked = sorted(outputs, key=lambda o: len(o.shape), reverse=True)
        dets, labels = ranked[0], ranked[1]
    if len(dets.shape) == 3 and dets.shape[2] == 5 and len(labels.shape) == 2:
        return dets.name, labels.name
    return None


def _image_input(path: Path, inputs: list[TensorInfo]) -> TensorInfo:
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
        raise DetectorLoadError(f"{path}: a detector takes one (N, 3, H, W) image input, got "
                                f"{[(i.name, list(i.shape)) for i in inputs]}")
    return inputs[0]


def infer_card(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> DetectorCard:
    """A card for a bare ONNX file, from its shapes; DetectorLoadError when they fit no known layout."""
    image = _image_input(path, inputs)
    height, width = _fixed(image.shape[2]), _fixed(image.shape[3])
    if height is None or width is None:
        raise DetectorLoadError(f"{path}: input {image.name} has a dynamic size {list(image.shape)}; "
                                f"give the input size in a card {path.with_suffix('.json').name}")
    layout: Layout
    if _end2end_outputs(outputs) is not None:
        layout, class_names = "end2end", ["person"]
    elif (len(outputs) == 1 and len(outputs[0].shape) == 3 and outputs[0].shape[1] == num_anchors((height, width))
          and isinstance(outputs[0].shape[2], int) and outputs[0].shape[2] >= 6):
        layout = "yolox"
        num_classes = outputs[0].shape[2] - 5
        class_names = list(COCO_CLASS_NAMES) if num_classes == len(COCO_CLASS_NAMES) else (
            ["person"] + [f"class_{i}" for i in range(1, num_classes)])
    else:
        raise DetectorLoadError(f"{path}: not a recognised detector (YOLOX (1, A, 85) head or end2end dets + "
                                f"labels); outputs {[(o.name, list(o.shape)) for o in outputs]}")
    return DetectorCard(name=path.stem, layout=layout, input_size=(height, width), class_names=class_names)


def detector_io(path: Path, card: DetectorCard, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> DetectorIO:
    """Check the file against its card and say how to feed and read it; DetectorLoadError on any mismatch."""
    image = _image_input(path, inputs)
    card_hw = (int(card.input_size[0]), int(card.input_size[1]))
    file_hw = (_fixed(image.shape[2]), _fixed(image.shape[3]))
    if any(f is not None and f != c for f, c in zip(file_hw, card_hw, strict=True)):
        raise DetectorLoadError(f"{path}: input {image.name} is {list(image.shape)} but its card says input_size "
                                f"{list(card_hw)}")
    if card.layout == "end2end":
        names = _end2end_outputs(outputs)
        if names is None:
            raise DetectorLoadError(f"{path}: card says end2end but the outputs are not dets (N, M, 5) + labels "
                                    f"(N, M): {[(o.name, list(o.shape)) for o in outputs]}")
        output_names: tuple[str, ...] = names
    else:
        expected = (num_anchors(card_hw), 5 + len(card.class_names))
        shape = outputs[0].shape if len(outputs) == 1 else ()
        if len(shape) != 3 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=True)):
            raise DetectorLoadError(f"{path}: card says yolox with {len(card.class_names)} classes at "
                                    f"{list(card_hw)}, so one output (N, {expected[0]}, {expected[1]}); got "
                                    f"{[(o.name, list(o.shape)) for o in outputs]}")
        output_names = (outputs[0].name,)
    return DetectorIO(image.name, card_hw, _fixed(image.shape[0]), output_names)
