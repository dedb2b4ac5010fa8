"""The serving layer: the pure pose codec run for concurrent requests, with admission, deadlines and metrics.

    open (image headers read and checked, boxes against the image size: worker thread, the call's deadline)
    -> admission (crops reserved: the boxes', or the detector's most; pixels reserved) -> decode (worker)
    -> [no boxes and a detector: letterbox (worker) -> detector batcher -> boxes (worker)]
    -> crops (worker) -> pose batcher (inference) -> heatmaps to persons (worker) -> PoseResult

Every reservation a request holds is a context manager entered in `_estimate`'s one ExitStack and released
when it exits, whatever happens. A call (one image, a batch, a v2 request) has one deadline for all its items.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from posecore.boxes import fit_to_image, whole_image_box
from posecore.codec import PersonPose, PoseCodec, Prepared
from posecore.contract import Stage
from posecore.detection import PersonDetector
from posecore.errors import PoseError
from posecore.imaging import decode_opened, oriented_size, read_header
from service.admission import PixelBudget, PixelReservation
from service.batching import Announcement, MicroBatcher
from service.calls import ItemNamer, run_call
from service.memory import release_after
from service.metrics import Metrics
from service.request import PoseRequest

T = TypeVar("T")
Draw = Callable[[np.ndarray, list[PersonPose]], bytes]


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
    decode: str = "official"  # the test-time pipeline that ran (posecore.codecs.spec)


@dataclass(frozen=True)
class DetectorStage:
    """The person detector and its own batcher (images, not crops), run for requests without boxes."""

    detector: PersonDetector
    batcher: MicroBatcher


@dataclass(frozen=True)
class OpenedImage:
    """A request whose image header was read and checked, and its boxes against the image's size: everything
    that can be refused without decoding has been. Nothing is decoded yet."""

    request: PoseRequest
    header: Image.Image

    @property
    def pixels(self) -> int:
        width, height = self.header.size
        return width * height


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

    def deadline(self) -> float:
        """A new call's deadline (time.monotonic()): every stage of every item of the call runs before it."""
        return time.monotonic() + self.request_timeout_s

    # -- one image -----------------------------------------------------------------------------------------
    async def estimate(self, request: PoseRequest) -> PoseResult:
        """Raises PoseError: a refusal of the image or its boxes (4xx), overloaded (429), shutting_down (503),
        deadline_exceeded (504) or inference_failed (500)."""
        deadline = self.deadline()
        (opened,) = await self._open_checked([request], deadline)
        result, _ = await self._estimate(opened, deadline)
        return result

    async def render(self, request: PoseRequest, draw: Draw) -> tuple[PoseResult, bytes]:
        """estimate, then `draw(image, persons) -> encoded bytes` in a worker thread; the image's pixels stay
        reserved until it is drawn."""
        deadline = self.deadline()
        (opened,) = await self._open_checked([request], deadline)
        result, encoded = await self._estimate(opened, deadline, draw)
        assert encoded is not None
        return result, encoded

    async def open(self, requests: Sequence[PoseRequest], deadline: float) -> list[OpenedImage | PoseError]:
        """Every image's header read and checked, and its boxes against its size, in one worker thread (a JPEG's
        structure walk is long for a large file): each item's OpenedImage, or the PoseError refusing it."""
        return await self._in_worker(deadline, self._open_all, list(requests))

    async def _open_checked(self, requests: Sequence[PoseRequest], deadline: float) -> list[OpenedImage]:
        checked = []
        for item in await self.open(requests, deadline):
            if isinstance(item, PoseError):
                raise item
            checked.append(item)
        return checked

    def _open_all(self, requests: list[PoseRequest]) -> list[OpenedImage | PoseError]:
        return [self._open_one(request) for request in requests]

    def _open_one(self, request: PoseRequest) -> OpenedImage | PoseError:
        try:
            self.codec.pipeline(request.decode)  # a decoding the card does not allow is refused before any work
            header = read_header(request.image, self.limits.max_image_bytes, self.limits.max_image_pixels)
            if request.boxes is not None and len(request.boxes):
                fit_to_image(request.boxes, oriented_size(header))  # refused now, not after decoding
        except PoseError as error:
            return error
        return OpenedImage(request, header)

    async def _estimate(self, opened: OpenedImage, deadline: float,
                        draw: Draw | None = None) -> tuple[PoseResult, bytes | None]:
        request = opened.request
        detection = self.detection if request.boxes is None and request.detect else None
        views = 2 if request.flip else 1
        timings: dict[Stage, float] = {}
        with contextlib.ExitStack() as held:
            held.callback(release_after, 3 * opened.pixels)  # last: a large image's freed pages go back
            # reserved before any decoding: refused now (429) when the crops, the detector's image or the
            # pixels would be refused later
            crops = held.enter_context(self.batcher.announce(crops_at_most(request, detection)))
            finding = held.enter_context(detection.batcher.announce(1)) if detection is not None else None
            image_held = held.enter_context(contextlib.ExitStack())  # the decoded image's lifetime
            pixels = image_held.enter_context(self.pixels.reserve(opened.pixels))
            image = await self._in_worker(deadline, _timed(timings, Stage.DECODE, _decode), opened.header,
                                          holding=pixels)
            height, width = image.shape[:2]
            if request.boxes is not None:
                boxes = request.boxes
            elif detection is not None and finding is not None:
                boxes = await self._find_people(detection, image, pixels, finding, deadline, timings)
                crops.shrink(len(boxes) * views)
            else:
                boxes = whole_image_box((width, height))
            prepared = await self._in_worker(deadline, _timed(timings, Stage.PREPROCESS, self.codec.crops), image,
                                             boxes, request.flip, request.decode, holding=pixels)
            if draw is None:  # the full image is not needed any more: its pixels go back now
                del image
                image_held.close()
            persons = await self._persons(prepared, crops, deadline, timings)
            encoded = None
            if draw is not None:
                encoded = await self._in_worker(deadline, draw, image, persons, holding=pixels)
        self._record(timings, len(persons))
        return PoseResult(prepared.image_wh, prepared.flip, persons, timings, prepared.pipeline.decoding), encoded

    async def _persons(self, prepared: Prepared, crops: Announcement, deadline: float,
                       timings: dict[Stage, float]) -> list[PersonPose]:
        """The crops through the pose batcher (their reservation becomes the queued job), then the persons."""
        if len(prepared.inputs):
            batch = await self.batcher.submit(prepared.inputs, deadline, crops)
            maps = batch.outputs
            timings |= {Stage.QUEUE: batch.queue_s, Stage.INFERENCE: batch.inference_s}
        else:  # an explicit empty box list, or nobody detected: nobody to look at
            crops.release()
            maps = np.zeros((0,), np.float32)
            timings |= {Stage.QUEUE: 0.0, Stage.INFERENCE: 0.0}
        # off the event loop too: with many boxes and the flip test, decoding takes tens of milliseconds
        return await self._in_worker(deadline, _timed(timings, Stage.POSTPROCESS, self.codec.persons), prepared, maps)

    # -- a decoded video frame -------------------------------------------------------------------------------
    async def estimate_frame(self, image: np.ndarray, boxes: np.ndarray | None, flip: bool,
                             deadline: float, decoding: str | None = None) -> PoseResult:
        """A decoded RGB frame through the same detector, crops, batcher and heatmap decoding as an image (so its
        keypoints equal those of the frame POSTed as a PNG). `boxes` None: the detector finds the people (the
        whole frame is one person without one). `deadline` is the whole video's. Its crops (the detector's most,
        when detecting) are reserved first, as an image's."""
        detection = self.detection if boxes is None else None
        views = 2 if flip else 1
        height, width = image.shape[:2]
        timings: dict[Stage, float] = {}
        with contextlib.ExitStack() as held:
            crops = held.enter_context(self.batcher.announce(_crops_at_most(boxes, detection, flip)))
            if detection is not None:
                finding = held.enter_context(detection.batcher.announce(1))
                boxes = await self._find_people(detection, image, None, finding, deadline, timings)
                crops.shrink(len(boxes) * views)
            frame_boxes = whole_image_box((width, height)) if boxes is None else boxes
            prepared = await self._in_worker(deadline, _timed(timings, Stage.PREPROCESS, self.codec.crops), image,
                                             frame_boxes, flip, decoding)
            persons = await self._persons(prepared, crops, deadline, timings)
        self._record(timings, len(persons))
        return PoseResult(prepared.image_wh, prepared.flip, persons, timings, prepared.pipeline.decoding)

    async def _find_people(self, detection: DetectorStage, image: np.ndarray, pixels: PixelReservation | None,
                           finding: Announcement, deadline: float, timings: dict[Stage, float]) -> np.ndarray:
        """The detection step: the image letterboxed, the detector's batcher, its rows decoded to person boxes."""
        started = time.perf_counter()
        letterboxed, ratio = await self._in_worker(deadline, detection.detector.prepare, image, holding=pixels)
        batch = await detection.batcher.submit(letterboxed[None], deadline, finding)
        height, width = image.shape[:2]
        boxes = await self._in_worker(deadline, detection.detector.boxes, batch.outputs[0], ratio, (width, height))
        timings[Stage.DETECT] = time.perf_counter() - started
        return boxes

    async def _in_worker(self, deadline: float, fn: Callable[..., T], *args: Any,
                         holding: PixelReservation | None = None) -> T:
        """Run `fn` in a preparation thread under the call's deadline (the thread itself cannot be stopped; its
        result is dropped). `holding`: the pixels `fn` works on, lent to it until it has finished."""
        context = contextvars.copy_context()  # keeps the request ID for any log line
        if holding is not None:
            holding.lend()
        try:
            work = self.executor.submit(context.run, fn, *args)
        except BaseException:
            if holding is not None:
                holding.returned()
            raise
        if holding is not None:
            work.add_done_callback(lambda _: holding.returned())  # also when cancelled before it started
        try:
            return await asyncio.wait_for(asyncio.wrap_future(work), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise PoseError("deadline_exceeded", "the request's deadline passed while its image was being worked on",
                            retry_after_s=self.batcher.retry_after_s) from None

    def _record(self, timings_s: dict[Stage, float], persons: int) -> None:
        self.metrics.observe_request(timings_s, persons)

    # -- a batch call ----------------------------------------------------------------------------------------
    async def estimate_many(self, requests: Sequence[PoseRequest | PoseError], *, name_error: ItemNamer | None = None,
                            concurrency: int = 4) -> list[PoseResult | PoseError]:
        """Every item's result or error, in order (items that failed to parse are passed through), under one
        deadline for the whole call. Every image header is read and checked before any item's work starts.

        `name_error`: the call succeeds or fails as a whole (v2): its first error, named by
        `name_error(error, index)`, is raised before any work when validation finds it, else as soon as an item
        fails, and the other items are cancelled (their queued crops dropped uncomputed).
        Otherwise a batch call admits its own items: see service/calls.py.
        """
        deadline = self.deadline()
        pending = [r for r in requests if isinstance(r, PoseRequest)]
        opened = iter(await self.open(pending, deadline)) if pending else iter(())
        items: list[OpenedImage | PoseError] = [r if isinstance(r, PoseError) else next(opened) for r in requests]
        if name_error is not None:
            for index, item in enumerate(items):
                if isinstance(item, PoseError):
                    raise name_error(item, index)

        async def one(item: OpenedImage) -> PoseResult:
            result, _ = await self._estimate(item, deadline)
            return result

        return await run_call(items, one, deadline, name_error=name_error, concurrency=concurrency,
                              retry_after_s=self.batcher.retry_after_s)


def crops_at_most(request: PoseRequest, detection: DetectorStage | None) -> int:
    """The crops a request may submit: its boxes', or with the detector to run, the most it keeps (x 2 with the
    flip test). Reserved before its image is decoded, so it is never refused after the work."""
    return _crops_at_most(request.boxes, detection if request.detect else None, request.flip)


def _crops_at_most(boxes: np.ndarray | None, detection: DetectorStage | None, flip: bool) -> int:
    views = 2 if flip else 1
    if boxes is not None:
        return len(boxes) * views
    if detection is not None:
        return detection.detector.max_boxes * views
    return views


def _decode(header: Image.Image) -> np.ndarray:
    """The image's RGB pixels; Pillow's own decoded buffer is closed at once (the array is a copy), not when the
    call ends: 4 bytes a pixel less held while the crops are computed."""
    try:
        return decode_opened(header)
    finally:
        header.close()


def _timed(timings: dict[Stage, float], stage: Stage, fn: Callable[..., T]) -> Callable[..., T]:
    """`fn`, recording its own running time (in its worker thread, not its wait for one) as `stage`."""
    def run(*args: Any) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            timings[stage] = time.perf_counter() - started
    return run


def _yield_to_inference() -> None:
    """Preparation threads run at a lower CPU priority than inference. On a CPU-only host both compete for the
    same cores; ONNX Runtime splits each op across its threads and waits for the slowest, so a preparation
    thread that preempts one of them stalls them all. Niced, preparation fills the gaps instead."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
