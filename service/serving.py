"""The serving layer: the pure pose codec run for concurrent requests, with admission, deadlines and metrics.

    admission (crops announced, pixels reserved from the header) -> decode (worker thread, deadline)
    -> [no boxes and a detector: letterbox -> detector batcher -> boxes (worker thread)]
    -> crops (worker thread) -> pose batcher (inference) -> heatmaps to persons (worker thread) -> PoseResult

Each stage's latency is recorded here, where it runs. Nothing here knows HTTP: the routers turn PoseRequests
into PoseResults through `estimate` / `estimate_many` and serialise them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from posecore.boxes import whole_image_box
from posecore.codec import PersonPose, PoseCodec, Prepared
from posecore.contract import Stage
from posecore.detection import PersonDetector
from posecore.detection.letterbox import Ratio
from posecore.errors import PoseError
from posecore.imaging import decode_opened, read_header
from service.admission import PixelBudget, PixelReservation
from service.batching import Announcement, MicroBatcher
from service.metrics import Metrics
from service.request import PoseRequest

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int
    max_image_pixels: int


@dataclass
class PoseResult:
    image_wh: tuple[int, int]
    flip: bool
    persons: list[PersonPose]
    timings_s: dict[Stage, float]
    image: np.ndarray | None = None  # the decoded RGB image, kept only when asked for (render)
    reservation: PixelReservation | None = None  # its pixels, held while the image is kept
    decode: str = "official"  # the test-time pipeline that ran (posecore.codecs.spec)

    def release_image(self) -> None:
        self.image = None
        if self.reservation is not None:
            self.reservation.release()


@dataclass(frozen=True)
class DetectorStage:
    """The person detector and its own batcher (images, not crops), run for requests without boxes."""

    detector: PersonDetector
    batcher: MicroBatcher


@dataclass
class _Decoded:
    image: np.ndarray
    prepared: Prepared | None  # None while the detector has yet to find the people
    timings_s: dict[Stage, float] = field(default_factory=dict)
    detector_input: np.ndarray | None = None  # (3, S, S) letterboxed, when detecting
    ratio: Ratio = 1.0  # the detector letterbox's (posecore.detection.letterbox)


class PoseService:
    """Owns the preparation threads; the batcher is started and closed by whoever built it (the app)."""

    def __init__(
        self,
        *,
        codec: PoseCodec,
        batcher: MicroBatcher,
        metrics: Metrics,
        limits: Limits,
        pixels: PixelBudget,
        request_timeout_s: float,
        detection: DetectorStage | None = None,
        workers: int | None = None,
    ) -> None:
        self.codec = codec
        self.detection = detection
        self.batcher = batcher
        self.metrics = metrics
        self.limits = limits
        self.pixels = pixels
        self.request_timeout_s = request_timeout_s
        self.workers = workers or max(4, 2 * (os.cpu_count() or 2))  # preparation threads
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pose-prepare",
                                           initializer=_yield_to_inference)

    def close(self) -> None:
        self.executor.shutdown(wait=False)

    # -- one image -----------------------------------------------------------------------------------------
    async def estimate(self, request: PoseRequest) -> PoseResult:
        """Raises PoseError: a refusal of the image or its boxes (4xx), overloaded (429), shutting_down (503),
        deadline_exceeded (504) or inference_failed (500)."""
        return await self._estimate(request, keep_image=False)

    async def render(self, request: PoseRequest, draw: Callable[[np.ndarray, list[PersonPose]], bytes],
                     ) -> tuple[PoseResult, bytes]:
        """estimate, then `draw(image, persons) -> encoded bytes` in a worker thread; the image's pixels stay
        reserved until it is drawn."""
        deadline = time.monotonic() + self.request_timeout_s
        result = await self._estimate(request, keep_image=True)
        try:
            assert result.image is not None
            encoded = await self._in_worker(deadline, draw, result.image, result.persons)
        finally:
            result.release_image()
        return result, encoded

    async def _estimate(self, request: PoseRequest, keep_image: bool) -> PoseResult:
        deadline = time.monotonic() + self.request_timeout_s
        self.codec.pipeline(request.decode)  # a decoding the card does not allow is refused before any work
        boxes = request.boxes
        detection = self.detection if boxes is None and request.detect else None
        expected_crops = (1 if boxes is None else len(boxes)) * (2 if request.flip else 1)
        header = read_header(request.image, self.limits.max_image_bytes, self.limits.max_image_pixels)
        width, height = header.size
        # refused now, before decoding, when the crops (or the detector's images) would be refused
        announcement = self.batcher.announce(expected_crops)
        announcements = [announcement]
        reservation: PixelReservation | None = None
        decoding_done = False
        try:
            if detection is not None:
                announcements.append(detection.batcher.announce(1))
            reservation = self.pixels.reserve(width * height)
            # while a worker decodes, the worker releases the pixels (even after the deadline gave up on it)
            decoded = await self._in_worker(deadline, self._decode, request, header, reservation, keep_image,
                                            detection is not None)
            decoding_done = True
            if detection is not None:
                decoded = await self._detect(detection, decoded, request, reservation, keep_image, deadline,
                                             announcements[1])
            prepared = decoded.prepared
            assert prepared is not None
            timings = dict(decoded.timings_s)
            if len(prepared.inputs):
                batch = await self.batcher.submit(prepared.inputs, deadline, announcement)
                maps = batch.outputs
                timings |= {Stage.QUEUE: batch.queue_s, Stage.INFERENCE: batch.inference_s}
            else:  # an explicit empty box list, or nobody detected: nobody to look at
                announcement.release()
                maps = np.zeros((0,), np.float32)
                timings |= {Stage.QUEUE: 0.0, Stage.INFERENCE: 0.0}
            started = time.perf_counter()
            # off the event loop too: with many boxes and the flip test, decoding takes tens of milliseconds
            persons = await self._in_worker(deadline, self.codec.persons, prepared, maps)
            timings[Stage.POSTPROCESS] = time.perf_counter() - started
        except BaseException:
            for each in announcements:
                each.release()
            if reservation is not None and (decoding_done or keep_image):
                reservation.release()
            raise
        self._record(timings, len(persons))
        if keep_image:
            return PoseResult(prepared.image_wh, prepared.flip, persons, timings, decoded.image, reservation,
                              decode=prepared.pipeline.decoding)
        return PoseResult(prepared.image_wh, prepared.flip, persons, timings, decode=prepared.pipeline.decoding)

    def _decode(self, request: PoseRequest, header: Image.Image, reservation: PixelReservation, keep_image: bool,
                detect: bool) -> _Decoded:
        """In a worker thread: decode, then either crop (boxes given, or the whole image) or letterbox for the
        detector. The pixels stay reserved while the full image exists: until the crops are made, or (keep_image)
        until the request is done with it."""
        done = True
        try:
            started = time.perf_counter()
            image = decode_opened(header)  # the header was read and checked at admission
            decoded = time.perf_counter()
            timings = {Stage.DECODE: decoded - started}
            if detect and self.detection is not None:
                done = False
                detector_input, ratio = self.detection.detector.prepare(image)
                timings[Stage.DETECT] = time.perf_counter() - decoded
                return _Decoded(image, None, timings, detector_input, ratio)
            height, width = image.shape[:2]
            boxes = whole_image_box((width, height)) if request.boxes is None else request.boxes
            prepared = self.codec.crops(image, boxes, request.flip, request.decode)
            timings[Stage.PREPROCESS] = time.perf_counter() - decoded
            return _Decoded(image, prepared, timings)
        finally:
            if done and not keep_image:
                reservation.release()

    async def _detect(self, detection: DetectorStage, decoded: _Decoded, request: PoseRequest,
                      reservation: PixelReservation, keep_image: bool, deadline: float,
                      announcement: Announcement) -> _Decoded:
        """The detector's batcher finds the people; their boxes (with the detector's scores) are then cropped."""
        assert decoded.detector_input is not None
        started = time.perf_counter()
        batch = await detection.batcher.submit(decoded.detector_input[None], deadline, announcement)
        waited = time.perf_counter() - started

        def boxes_then_crops() -> _Decoded:
            try:
                began = time.perf_counter()
                height, width = decoded.image.shape[:2]
                boxes = detection.detector.boxes(batch.outputs[0], decoded.ratio, (width, height))
                cropping = time.perf_counter()
                prepared = self.codec.crops(decoded.image, boxes, request.flip, request.decode)
                timings = {**decoded.timings_s, Stage.PREPROCESS: time.perf_counter() - cropping}
                timings[Stage.DETECT] += waited + (cropping - began)
                return _Decoded(decoded.image, prepared, timings)
            finally:
                if not keep_image:
                    reservation.release()

        return await self._in_worker(deadline, boxes_then_crops)

    async def _in_worker(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in a preparation thread under the request's deadline (the thread itself cannot be stopped;
        its result is dropped)."""
        context = contextvars.copy_context()  # keeps the request ID for any log line
        future = asyncio.get_running_loop().run_in_executor(self.executor, context.run, fn, *args)
        try:
            return await asyncio.wait_for(future, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise PoseError("deadline_exceeded", "the request's deadline passed while its image was being worked on",
                            retry_after_s=self.batcher.retry_after_s) from None

    def _record(self, timings_s: dict[Stage, float], persons: int) -> None:
        self.metrics.observe_request(timings_s, persons)

    # -- a decoded video frame -------------------------------------------------------------------------------
    async def estimate_frame(self, image: np.ndarray, boxes: np.ndarray | None, flip: bool,
                             deadline: float) -> PoseResult:
        """A decoded RGB frame through the same detector, crops, batcher and heatmap decoding as an image (so its
        keypoints equal those of the frame POSTed as a PNG). `boxes` None: the detector finds the people (the
        whole frame is one person without one). `deadline` is the whole video's."""
        detection = self.detection if boxes is None else None
        height, width = image.shape[:2]
        announcement = self.batcher.announce((1 if boxes is None else len(boxes)) * (2 if flip else 1))
        announcements = [announcement]
        timings: dict[Stage, float] = {}
        try:
            if detection is not None:
                announcements.append(detection.batcher.announce(1))
                started = time.perf_counter()
                detector_input, ratio = await self._in_worker(deadline, detection.detector.prepare, image)
                batch = await detection.batcher.submit(detector_input[None], deadline, announcements[1])
                boxes = await self._in_worker(deadline, detection.detector.boxes, batch.outputs[0], ratio,
                                              (width, height))
                timings[Stage.DETECT] = time.perf_counter() - started
            started = time.perf_counter()
            frame_boxes = whole_image_box((width, height)) if boxes is None else boxes
            prepared = await self._in_worker(deadline, self.codec.crops, image, frame_boxes, flip)
            timings[Stage.PREPROCESS] = time.perf_counter() - started
            if len(prepared.inputs):
                result = await self.batcher.submit(prepared.inputs, deadline, announcement)
                maps = result.outputs
                timings |= {Stage.QUEUE: result.queue_s, Stage.INFERENCE: result.inference_s}
            else:
                announcement.release()
                maps = np.zeros((0,), np.float32)
                timings |= {Stage.QUEUE: 0.0, Stage.INFERENCE: 0.0}
            started = time.perf_counter()
            persons = await self._in_worker(deadline, self.codec.persons, prepared, maps)
            timings[Stage.POSTPROCESS] = time.perf_counter() - started
        except BaseException:
            for each in announcements:
                each.release()
            raise
        self._record(timings, len(persons))
        return PoseResult(prepared.image_wh, prepared.flip, persons, timings, decode=prepared.pipeline.decoding)

    # -- a batch call ----------------------------------------------------------------------------------------
    async def estimate_many(self, requests: Sequence[PoseRequest | PoseError],
                            concurrency: int = 4) -> list[PoseResult | PoseError]:
        """Every item's result or error, in order (items that failed to parse are passed through).

        A call admits its own items: an item refused as overloaded while the call's own items hold the capacity
        waits for one of them and tries again, so an acceptable call on an idle server is never refused in part.
        The first item runs alone: if it is refused as overloaded, the whole call is (429), before other work.
        """
        results: list[PoseResult | PoseError | None] = [r if isinstance(r, PoseError) else None for r in requests]
        pending = [(i, r) for i, r in enumerate(requests) if isinstance(r, PoseRequest)]
        own = _OwnItems()
        if pending:
            index, first = pending[0]
            results[index] = await own.run(lambda: self.estimate(first), refuse_call=True)
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, item: PoseRequest) -> None:
            async with gate:
                results[index] = await own.run(lambda: self.estimate(item))

        await asyncio.gather(*(one(i, r) for i, r in pending[1:]))
        answered: list[PoseResult | PoseError] = []
        for result in results:  # every slot is filled: one answer per item, in order
            assert result is not None
            answered.append(result)
        return answered


def _yield_to_inference() -> None:
    """Preparation threads run at a lower CPU priority than inference. On a CPU-only host both compete for the
    same cores; ONNX Runtime splits each op across its threads and waits for the slowest, so a preparation
    thread that preempts one of them stalls them all. Niced, preparation fills the gaps instead."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class _OwnItems:
    """The items of one batch call in flight; an overloaded item waits while its siblings hold the capacity."""

    def __init__(self) -> None:
        self.inflight = 0
        self.finished = 0
        self._changed = asyncio.Event()

    async def run(self, attempt: Callable[[], Awaitable[PoseResult]],
                  refuse_call: bool = False) -> PoseResult | PoseError:
        while True:
            self.inflight += 1
            try:
                return await attempt()
            except PoseError as error:
                if error.code != "overloaded":
                    return error
                if self.inflight <= 1:  # nothing of ours holds the capacity: others do
                    if refuse_call:
                        raise
                    return error
                seen = self.finished
            finally:
                self.inflight -= 1
                self.finished += 1
                self._changed.set()
                self._changed = asyncio.Event()
            while self.finished == seen + 1:  # + 1: our own failed attempt
                await self._changed.wait()
