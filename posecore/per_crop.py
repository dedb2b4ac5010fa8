"""The official inference style, timed: one request at a time, one crop at a time, through the pose codec
(decode, crop, normalise, infer, decode heatmaps). The baseline the service is measured against, run with ONNX
Runtime by the service's bench and with PyTorch eager by model_export's (which alone has torch)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import cycle

import numpy as np

from posecore.boxes import parse_boxes
from posecore.codec import PoseCodec
from posecore.imaging import LOCAL_MAX_IMAGE_BYTES, LOCAL_MAX_IMAGE_PIXELS, decode_image


@dataclass(frozen=True)
class PerCropRun:
    requests: int
    crops: int
    seconds: float
    latencies_s: list[float]


def run_per_crop(photos: Sequence[tuple[bytes, list[list[float]]]], codec: PoseCodec,
                 infer_one: Callable[[np.ndarray], np.ndarray], budget_s: float) -> PerCropRun:
    """(encoded image, its xywh boxes) in turn until `budget_s` has passed; each request's latency."""
    latencies, crops, started = [], 0, time.perf_counter()
    for data, boxes in cycle(photos):
        if time.perf_counter() - started >= budget_s:
            break
        t = time.perf_counter()
        image = decode_image(data, LOCAL_MAX_IMAGE_BYTES, LOCAL_MAX_IMAGE_PIXELS)
        rows = parse_boxes(boxes)
        assert rows is not None
        for i in range(len(rows)):
            prepared = codec.crops(image, rows[i : i + 1], flip=False)
            codec.persons(prepared, infer_one(prepared.inputs))
        crops += len(rows)
        latencies.append(time.perf_counter() - t)
    return PerCropRun(len(latencies), crops, time.perf_counter() - started, latencies)
