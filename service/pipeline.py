"""PosePipeline: image bytes + boxes -> keypoints in image pixels. The stages in order; no FastAPI here.

decode -> boxes -> center/scale -> affine crops -> normalise (one worker thread, off the event loop)
-> micro-batcher (inference) -> flip-test average -> argmax + quarter-pixel -> inverse affine -> rescore.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from service import geometry, heatmaps
from service.batching import MicroBatcher
from service.errors import PoseError
from service.imaging import decode_image
from service.modelcard import ModelCard


@dataclass
class Limits:
    max_image_bytes: int
    max_image_pixels: int
    max_boxes: int


@dataclass
class Prepared:
    """One image, decoded and cropped, ready for the batcher."""

    image: np.ndarray  # RGB uint8 (H, W, 3)
    boxes: np.ndarray  # (N, 4) xywh, image pixels
    box_scores: np.ndarray  # (N,)
    centers: np.ndarray  # (N, 2)
    scales: np.ndarray  # (N, 2)
    inputs: np.ndarray  # (N or 2N, 3, h, w) float32; the flipped crops follow the originals
    flip: bool
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]


@dataclass
class PersonPose:
    box: np.ndarray  # xywh
    box_score: float
    score: float  # official rescoring: box score x mean of keypoint scores above 0.2
    keypoints: np.ndarray  # (K, 3): x, y, score in image pixels


@dataclass
class PoseResult:
    prepared: Prepared
    persons: list[PersonPose]
    timings_s: dict[str, float]


def parse_boxes(raw: list | None, box_format: str) -> np.ndarray | None:
    """JSON boxes ([x, y, w, h(, score)] or [x1, y1, x2, y2(, score)]) -> float64 (N, 4|5) in xywh."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(b, list) and len(b) in (4, 5) for b in raw):
        raise PoseError("invalid_boxes", "boxes must be a JSON list of [x, y, w, h] or [x, y, w, h, score] lists")
    if not raw:
        return np.zeros((0, 5))
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for b in raw for v in b):
        raise PoseError("invalid_boxes", "box values must be numbers")
    try:
        boxes = np.array([b if len(b) == 5 else [*b, 1.0] for b in raw], dtype=np.float64)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise PoseError("invalid_boxes", "box values must fit a 64-bit float") from None
    if box_format == "xyxy":
        boxes = geometry.xyxy_to_xywh(boxes)
    elif box_format != "xywh":
        raise PoseError("invalid_request", f"box_format must be 'xywh' or 'xyxy', not {box_format!r}")
    return boxes


class PosePipeline:
    def __init__(self, card: ModelCard, batcher: MicroBatcher, limits: Limits, request_timeout_s: float) -> None:
        self.card = card
        self.batcher = batcher
        self.limits = limits
        self.request_timeout_s = request_timeout_s
        self.input_wh = (card.input.width, card.input.height)
        self.heatmap_wh = (card.output.width, card.output.height)
        self.aspect_ratio = card.input.width / card.input.height
        self.flip_pairs = np.asarray(card.flip_pairs, dtype=np.int64).reshape(-1, 2)
        # Crops are small and already run in parallel request threads; OpenCV's own thread pool would only
        # contend with ONNX Runtime's threads for the same cores.
        cv2.setNumThreads(1)
        self.executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="pose-prepare",
                                           initializer=_yield_to_inference)

    def close(self) -> None:
        self.executor.shutdown(wait=False)

    # -- CPU-bound preparation (runs in a worker thread) -------------------------------------------
    def prepare(self, data: bytes, boxes: np.ndarray | None, flip: bool) -> Prepared:
        started = time.perf_counter()
        image = decode_image(data, self.limits.max_image_bytes, self.limits.max_image_pixels)
        decoded = time.perf_counter()
        height, width = image.shape[:2]
        if boxes is None:  # no boxes: the whole image is one person
            boxes = np.array([[0.0, 0.0, width, height, 1.0]])
        xywh, box_scores = geometry.validate_boxes(boxes, (width, height), self.limits.max_boxes)
        centers, scales = geometry.boxes_to_centers_scales(xywh, aspect_ratio=self.aspect_ratio)
        inputs = self.crop_inputs(image, centers, scales, flip)
        prepared = Prepared(image, xywh, box_scores, centers, scales, inputs, flip)
        prepared.timings_s = {"decode": decoded - started, "preprocess": time.perf_counter() - decoded}
        return prepared

    def crop_inputs(self, image: np.ndarray, centers: np.ndarray, scales: np.ndarray, flip: bool) -> np.ndarray:
        """Affine crops, normalised to the network's input; with flip, the mirrored inputs appended."""
        width, height = self.input_wh
        if len(centers) == 0:
            return np.zeros((0, 3, height, width), np.float32)
        crops = np.stack([geometry.crop_person(image, c, s, self.input_wh) for c, s in zip(centers, scales)])
        spec = self.card.input
        inputs = geometry.normalize_crops(crops, spec.mean, spec.std, spec.value_scale, bgr=spec.color_order == "BGR")
        if flip:  # the official flip test mirrors the normalised input tensor (input.flip(3))
            inputs = np.concatenate([inputs, inputs[..., ::-1]])
        return inputs

    # -- GPU/CPU-bound inference, then decoding ----------------------------------------------------
    def decode(self, prepared: Prepared, maps: np.ndarray) -> list[PersonPose]:
        n = len(prepared.boxes)
        if n == 0:
            return []
        if prepared.flip:
            maps = heatmaps.flip_test_average(maps[:n], maps[n:], self.flip_pairs, shift=True)
        coords, maxvals = heatmaps.decode_heatmaps(maps, prepared.centers, prepared.scales)
        persons = []
        for i in range(n):
            keypoints = np.concatenate([coords[i], maxvals[i]], axis=1)
            score = heatmaps.rescore_person(float(prepared.box_scores[i]), maxvals[i])
            persons.append(PersonPose(prepared.boxes[i], float(prepared.box_scores[i]), score, keypoints))
        return persons

    async def estimate(self, data: bytes, boxes: np.ndarray | None, flip: bool) -> PoseResult:
        deadline = time.monotonic() + self.request_timeout_s
        loop = asyncio.get_running_loop()
        expected_crops = (1 if boxes is None else len(boxes)) * (2 if flip else 1)
        announcement = self.batcher.announce(expected_crops)
        try:
            context = contextvars.copy_context()  # keeps the request ID for any log line
            prepared = await loop.run_in_executor(
                self.executor, context.run, self.prepare, data, boxes, flip)
        except BaseException:
            announcement.release()
            raise
        timings = dict(prepared.timings_s)
        if len(prepared.inputs):
            batch = await self.batcher.submit(prepared.inputs, deadline, announcement)
            maps = batch.heatmaps
            timings |= {"queue": batch.queue_s, "inference": batch.inference_s}
        else:  # an explicit empty box list: nobody to look at
            announcement.release()
            maps = np.zeros((0,), np.float32)
            timings |= {"queue": 0.0, "inference": 0.0}
        started = time.perf_counter()
        # off the event loop too: with many boxes and the flip test, decoding takes tens of milliseconds
        persons = await loop.run_in_executor(self.executor, self.decode, prepared, maps)
        timings["postprocess"] = time.perf_counter() - started
        return PoseResult(prepared, persons, timings)


def _yield_to_inference() -> None:
    """Preparation threads run at a lower CPU priority than inference. On a CPU-only host both compete for the
    same cores; ONNX Runtime splits each op across its threads and waits for the slowest, so a preparation
    thread that preempts one of them stalls them all. Niced, preparation fills the gaps instead."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass
