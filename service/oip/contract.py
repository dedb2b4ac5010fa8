"""The pose model as an Open Inference Protocol v2 model: its tensors, its metadata and Triton-style config, and
the mapping between infer tensors and the service's own PoseRequests / PoseResults.

Inputs: `image` BYTES [B] (encoded JPEG, PNG, WebP or BMP files); optional `boxes` FP32 [N, 4|5] (x, y, w, h and
an optional score; x1, y1, x2, y2 with the request parameter box_format=xyxy); where B > 1, `box_image_index`
INT32 [N] says which image each box belongs to. With `boxes` given, an image that no box points at has nobody
in it; without `boxes`, every image is as /v1/pose without boxes. Request parameters: the /v1 options
(`box_format`, `flip`, `detect`, `decode`), read by the same field table as /v1 (service/request.py); the
response's parameters say which `decode` ran.
Outputs, one row per person, images in order: `keypoints` FP32 [P, K, 3] (x, y, score in image pixels), `boxes`
FP32 [P, 4] (x, y, w, h), `scores` FP32 [P], `image_index` INT32 [P].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from posecore.errors import PoseError
from service.oip.tensors import BYTES, InferRequest, InputCheck, OutputTensor, Tensor, bad
from service.request import FIELDS, PoseRequest, RequestDefaults, build_request
from service.serving import PoseResult

MODEL_VERSION = "1"
PLATFORM = "hrnet_pose"  # an image-in, keypoints-out pipeline around an ONNX Runtime model
IMAGE, BOXES, BOX_IMAGE_INDEX = "image", "boxes", "box_image_index"
BOX_TYPES = ("FP32", "FP64")  # FP32 is the contract; FP64 costs nothing to accept
INDEX_TYPES = ("INT32", "INT64")
CALL_FIELDS = {f.name: f for f in FIELDS if not f.per_item}  # box_format, flip, detect, decode: request parameters
ITEM_FIELDS = {f.name for f in FIELDS if f.per_item}  # boxes: an input tensor here, never a parameter


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 where variable
    optional: bool = False


def input_specs() -> list[TensorSpec]:
    return [TensorSpec(IMAGE, BYTES, [-1]), TensorSpec(BOXES, "FP32", [-1, -1], optional=True),
            TensorSpec(BOX_IMAGE_INDEX, "INT32", [-1], optional=True)]


def output_specs(num_keypoints: int) -> list[TensorSpec]:
    return [TensorSpec("keypoints", "FP32", [-1, num_keypoints, 3]), TensorSpec("boxes", "FP32", [-1, 4]),
            TensorSpec("scores", "FP32", [-1]), TensorSpec("image_index", "INT32", [-1])]


def model_metadata(name: str, num_keypoints: int) -> dict[str, Any]:
    def describe(spec: TensorSpec) -> dict[str, Any]:
        return {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}

    return {"name": name, "versions": [MODEL_VERSION], "platform": PLATFORM,
            "inputs": [describe(s) for s in input_specs()],
            "outputs": [describe(s) for s in output_specs(num_keypoints)]}


def model_config(name: str, num_keypoints: int) -> dict[str, Any]:
    """Triton's model configuration, minimal form. max_batch_size 0: the shapes above are the whole shapes (the
    images of one call are its own batch; the service batches crops across calls itself)."""
    def describe(spec: TensorSpec) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": spec.name, "data_type": "TYPE_STRING" if spec.datatype == BYTES
                                 else f"TYPE_{spec.datatype}", "dims": spec.shape}
        if spec.optional:
            entry["optional"] = True
        return entry

    return {"name": name, "platform": PLATFORM, "backend": "", "max_batch_size": 0,
            "input": [describe(s) for s in input_specs()],
            "output": [describe(s) for s in output_specs(num_keypoints)]}


# -- infer: tensors in -> PoseRequests ---------------------------------------------------------------------
def input_check(max_images: int, max_boxes: int) -> InputCheck:
    """The inputs' names, datatypes and shapes, checked before their data are read: an image count over the
    limit is refused from the shape, before 16 million BYTES elements are split."""
    def check(name: str, datatype: str, shape: tuple[int, ...]) -> None:
        if name == IMAGE:
            if datatype != BYTES or len(shape) != 1:
                raise bad(f"input 'image' must be BYTES of shape [B], got {datatype} {list(shape)}")
            if shape[0] > max_images:
                raise PoseError("too_many_items", f"{shape[0]} images in one call; the limit is {max_images}")
        elif name == BOXES:
            if datatype not in BOX_TYPES:
                raise bad(f"input 'boxes' must be FP32, got {datatype}")
            if len(shape) != 2 or shape[1] not in (4, 5):
                raise PoseError("invalid_boxes", f"input 'boxes' must have shape [N, 4] or [N, 5], got {list(shape)}")
            if shape[0] > max_images * max_boxes:
                raise PoseError("too_many_boxes", f"{shape[0]} boxes in one call; at most {max_boxes} per image")
        elif name == BOX_IMAGE_INDEX:
            if datatype not in INDEX_TYPES or len(shape) != 1:
                raise bad(f"input 'box_image_index' must be INT32 of shape [N], got {datatype} {list(shape)}")
        else:
            raise bad(f"unknown input {name[:100]!r}; the inputs are image, boxes and box_image_index")
    return check


def pose_requests(request: InferRequest, defaults: RequestDefaults, max_images: int) -> list[PoseRequest]:
    """One PoseRequest per image. Raises PoseError: a malformed tensor (400), too many images or boxes (422),
    bad box values (422, naming the image)."""
    unknown = sorted(set(request.inputs) - {IMAGE, BOXES, BOX_IMAGE_INDEX})
    if unknown:
        raise bad(f"unknown input(s) {', '.join(map(repr, unknown))[:200]}; the inputs are image, boxes and "
                  "box_image_index")
    images = _images(request.inputs.get(IMAGE), max_images)
    boxes = _boxes(request.inputs.get(BOXES))
    index = _box_image_index(request.inputs.get(BOX_IMAGE_INDEX), boxes, len(images))
    misplaced = sorted(ITEM_FIELDS & set(request.parameters))
    if misplaced:
        raise bad(f"parameter(s) {', '.join(map(repr, misplaced))} are not request parameters here: send the boxes "
                  "as the input tensor 'boxes' (FP32 [N, 4|5], with 'box_image_index' for several images)")
    values = {name: CALL_FIELDS[name].from_json(name, value) for name, value in request.parameters.items()
              if name in CALL_FIELDS and value is not None}
    requests = []
    for i, image in enumerate(images):
        own = None if boxes is None else boxes[index == i]
        try:
            requests.append(build_request(image, {**values, BOXES: own}, defaults))
        except PoseError as error:
            raise for_image(error, i, len(images)) from None
    return requests


def _images(tensor: Tensor | None, max_images: int) -> list[bytes]:
    if tensor is None:
        raise bad("input 'image' (BYTES [B], the encoded image files) is required")
    if tensor.datatype != BYTES or len(tensor.shape) != 1 or tensor.elements is None:
        raise bad(f"input 'image' must be BYTES of shape [B], got {tensor.datatype} {list(tensor.shape)}")
    if not tensor.elements:
        raise bad("input 'image' holds no image")
    if len(tensor.elements) > max_images:
        raise PoseError("too_many_items", f"{len(tensor.elements)} images in one call; the limit is {max_images}")
    return tensor.elements


def _boxes(tensor: Tensor | None) -> np.ndarray | None:
    if tensor is None:
        return None
    if tensor.datatype not in BOX_TYPES or tensor.array is None:
        raise bad(f"input 'boxes' must be FP32, got {tensor.datatype}")
    if tensor.array.ndim != 2 or tensor.array.shape[1] not in (4, 5):
        raise PoseError("invalid_boxes", f"input 'boxes' must have shape [N, 4] or [N, 5], got {list(tensor.shape)}")
    return tensor.array


def _box_image_index(tensor: Tensor | None, boxes: np.ndarray | None, image_count: int) -> np.ndarray:
    if tensor is None:
        if boxes is not None and image_count > 1 and len(boxes):
            raise bad(f"{image_count} images and boxes: input 'box_image_index' (INT32 [N]) must say which image "
                      "each box belongs to")
        return np.zeros(0 if boxes is None else len(boxes), dtype=np.int64)
    if boxes is None:
        raise bad("input 'box_image_index' needs input 'boxes'")
    if tensor.datatype not in INDEX_TYPES or tensor.array is None:
        raise bad(f"input 'box_image_index' must be INT32, got {tensor.datatype}")
    index = tensor.array.astype(np.int64).reshape(-1)
    if tensor.array.ndim != 1 or len(index) != len(boxes):
        raise bad(f"input 'box_image_index' must have shape [{len(boxes)}] (one entry per box), got "
                  f"{list(tensor.shape)}")
    if len(index) and (index.min() < 0 or index.max() >= image_count):
        raise bad(f"input 'box_image_index' must hold image indices 0..{image_count - 1}")
    return index


def output_names(num_keypoints: int) -> list[str]:
    return [spec.name for spec in output_specs(num_keypoints)]


def for_image(error: PoseError, index: int, count: int) -> PoseError:
    """The error of one image of a call of `count`, named by its index when there are several."""
    if count == 1:
        return error
    return PoseError(error.code, f"image {index}: {error.message}", error.retry_after_s)


# -- infer: PoseResults -> tensors out ---------------------------------------------------------------------
def pose_outputs(results: list[PoseResult], num_keypoints: int) -> list[OutputTensor]:
    persons = [(i, p) for i, result in enumerate(results) for p in result.persons]
    keypoints = np.zeros((len(persons), num_keypoints, 3), np.float32)
    boxes = np.zeros((len(persons), 4), np.float32)
    scores = np.zeros(len(persons), np.float32)
    image_index = np.zeros(len(persons), np.int32)
    for row, (i, person) in enumerate(persons):
        keypoints[row] = person.keypoints
        boxes[row] = person.box
        scores[row] = person.score
        image_index[row] = i
    return [OutputTensor("keypoints", "FP32", keypoints), OutputTensor("boxes", "FP32", boxes),
            OutputTensor("scores", "FP32", scores), OutputTensor("image_index", "INT32", image_index)]
