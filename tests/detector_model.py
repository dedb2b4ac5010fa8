"""Synthetic person detectors for tests: ONNX graphs (built with onnx.helper) whose output encodes known boxes.

`yolox_head` writes the raw, pre-decode rows of the official YOLOX head (1, A, 5 + C) that decode to given
boxes: for a box at centre (cx, cy) of size (w, h) on the stride-s grid, the row of the cell holding the centre
gets x = cx / s - cell_x, y = cy / s - cell_y, w = log(w / s), h = log(h / s), objectness = the wanted score,
probability 1 for its class. Every other row is all zero (objectness 0: never a detection).

`build_yolox_detector` saves a graph in the official layout (input `images` (1|N, 3, H, W), output `output`)
that returns that constant; it reads its input trivially (max x 0) so ONNX Runtime keeps the input. The
serving tests reuse these builders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from posecore.detection.card import COCO_CLASS_NAMES, DetectorCard, DetectorSource
from posecore.detection.yolox import STRIDES

OPSET = 17


@dataclass(frozen=True)
class SyntheticObject:
    box_xyxy: tuple[float, float, float, float]  # letterboxed input pixels
    score: float  # objectness; the class probability is 1, so this is the detection score
    class_id: int = 0
    stride: int = 16  # which grid's cell carries it (two objects need different cells)


def image_box_to_input(box_xywh: Sequence[float], ratio: float) -> tuple[float, float, float, float]:
    """A box x, y, w, h in image pixels -> x1, y1, x2, y2 in letterboxed input pixels (times the ratio)."""
    x, y, w, h = box_xywh
    return (x * ratio, y * ratio, (x + w) * ratio, (y + h) * ratio)


def letterbox_ratio(image_wh: tuple[int, int], input_hw: tuple[int, int]) -> float:
    return min(input_hw[0] / image_wh[1], input_hw[1] / image_wh[0])


def yolox_head(input_hw: tuple[int, int], objects: Sequence[SyntheticObject],
               num_classes: int = len(COCO_CLASS_NAMES)) -> np.ndarray:
    """float32 (1, A, 5 + num_classes) raw head output that decodes to `objects`."""
    offsets, grid_sizes = {}, {}
    start = 0
    for stride in STRIDES:
        rows, cols = input_hw[0] // stride, input_hw[1] // stride
        offsets[stride], grid_sizes[stride] = start, (rows, cols)
        start += rows * cols
    head = np.zeros((1, start, 5 + num_classes), dtype=np.float32)
    used: set[int] = set()
    for obj in objects:
        x1, y1, x2, y2 = obj.box_xyxy
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        rows, cols = grid_sizes[obj.stride]
        cell_x = min(max(int(cx // obj.stride), 0), cols - 1)
        cell_y = min(max(int(cy // obj.stride), 0), rows - 1)
        index = offsets[obj.stride] + cell_y * cols + cell_x
        if index in used:
            raise ValueError(f"two synthetic objects share the stride-{obj.stride} cell ({cell_x}, {cell_y})")
        used.add(index)
        head[0, index, :4] = (cx / obj.stride - cell_x, cy / obj.stride - cell_y, math.log(w / obj.stride),
                              math.log(h / obj.stride))
        head[0, index, 4] = obj.score
        head[0, index, 5 + obj.class_id] = 1.0
    return head


def _trivial_input_use(batch_shape_name: str) -> list[onnx.NodeProto]:
    """images -> `zeros` (N, 1, 1): max over C, H, W times 0, so every output depends on the input."""
    return [
        helper.make_node("ReduceMax", ["images"], ["image_max"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["image_max", "per_item_shape"], ["image_max_3d"]),
        helper.make_node("Mul", ["image_max_3d", "zero"], [batch_shape_name]),
    ]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _common_initializers() -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "per_item_shape"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]


def build_yolox_detector(path: Path, head: np.ndarray, input_hw: tuple[int, int], *, batch: int | None = 1,
                         card: DetectorCard | None = None) -> Path:
    """Save a YOLOX-layout ONNX at `path` whose output is `head` (1, A, 5 + C) for every image.

    batch: the fixed batch axis (the official export: 1), or None for a dynamic one. With `card`, it is
    written beside the file as NAME.json.
    """
    batch_dim: int | str = "N" if batch is None else batch
    height, width = input_hw
    nodes = [*_trivial_input_use("zeros"), helper.make_node("Add", ["head", "zeros"], ["output"])]
    graph = helper.make_graph(
        nodes, "synthetic_yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch_dim, 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch_dim, head.shape[1], head.shape[2]])],
        initializer=[numpy_helper.from_array(head.astype(np.float32), "head"), *_common_initializers()])
    _save(graph, path)
    if card is not None:
        card.write(path.with_suffix(".json"))
    return path


def build_end2end_detector(path: Path, dets: np.ndarray, labels: np.ndarray, input_hw: tuple[int, int], *,
                           batch: int | None = 1, card: DetectorCard | None = None) -> Path:
    """Save an mmdeploy-style end2end ONNX: `dets` (1, M, 5) float32 and `labels` (1, M) int64 for every image."""
    batch_dim: int | str = "N" if batch is None else batch
    height, width = input_hw
    nodes = [*_trivial_input_use("zeros"),
             helper.make_node("Add", ["dets_const", "zeros"], ["dets"]),
             helper.make_node("Squeeze", ["zeros", "last_axis"], ["zeros_2d"]),
             helper.make_node("Cast", ["zeros_2d"], ["zeros_int"], to=TensorProto.INT64),
             helper.make_node("Add", ["labels_const", "zeros_int"], ["labels"])]
    graph = helper.make_graph(
        nodes, "synthetic_end2end",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch_dim, 3, height, width])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [batch_dim, dets.shape[1], 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [batch_dim, dets.shape[1]])],
        initializer=[numpy_helper.from_array(dets.astype(np.float32), "dets_const"),
                     numpy_helper.from_array(labels.astype(np.int64), "labels_const"),
                     numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"), *_common_initializers()])
    _save(graph, path)
    if card is not None:
        card.write(path.with_suffix(".json"))
    return path


# ---- the scene the tests use: two people, a near-duplicate, a faint person, a car --------------------------

SCENE_INPUT_HW = (128, 128)


@dataclass(frozen=True)
class Scene:
    """Expected detections of `scene_head` for an image of `image_wh`: two persons (x, y, w, h, score)."""

    image_wh: tuple[int, int]
    ratio: float
    persons: np.ndarray  # float64 (2, 5), image pixels, best first
    head: np.ndarray  # the raw head (1, A, 85)


def scene(image_wh: tuple[int, int], input_hw: tuple[int, int] = SCENE_INPUT_HW) -> Scene:
    """Boxes placed as fractions of the image, so any photo size gives a sensible scene:

    person A (score 0.9) and person B (0.8) are kept; a near-duplicate of A (0.7, IoU ~0.8) is removed by NMS;
    a faint person (0.2) is under the 0.3 threshold; a car (class 2, 0.95) is not a person.
    """
    width, height = image_wh
    ratio = letterbox_ratio(image_wh, input_hw)

    def box(fx: float, fy: float, fw: float, fh: float) -> tuple[float, float, float, float]:
        return (fx * width, fy * height, fw * width, fh * height)

    person_a, person_b = box(0.05, 0.10, 0.30, 0.80), box(0.55, 0.20, 0.35, 0.70)
    duplicate, faint, car = box(0.07, 0.12, 0.29, 0.78), box(0.40, 0.05, 0.15, 0.30), box(0.60, 0.70, 0.35, 0.25)
    objects = [
        SyntheticObject(image_box_to_input(person_a, ratio), 0.9, 0, 16),
        SyntheticObject(image_box_to_input(person_b, ratio), 0.8, 0, 16),
        SyntheticObject(image_box_to_input(duplicate, ratio), 0.7, 0, 32),
        SyntheticObject(image_box_to_input(faint, ratio), 0.2, 0, 8),
        SyntheticObject(image_box_to_input(car, ratio), 0.95, 2, 8),
    ]
    persons = np.array([[*person_a, 0.9], [*person_b, 0.8]], dtype=np.float64)
    return Scene(image_wh, ratio, persons, yolox_head(input_hw, objects))


def scene_card(name: str = "synthetic", input_hw: tuple[int, int] = SCENE_INPUT_HW) -> DetectorCard:
    return DetectorCard(name=name, layout="yolox", input_size=input_hw, source=DetectorSource())


def build_scene_detector(path: Path, image_wh: tuple[int, int], *, batch: int | None = 1,
                         with_card: bool = True) -> tuple[Path, Scene]:
    """A YOLOX-layout detector that finds the `scene` people in any image of size `image_wh`."""
    expected = scene(image_wh)
    build_yolox_detector(path, expected.head, SCENE_INPUT_HW, batch=batch,
                         card=scene_card(path.stem) if with_card else None)
    return path, expected
