"""The micro-batcher: items from concurrent requests pooled into one inference batch.

Requests submit their items (model inputs, float32, batch axis first: the pose model's crops, or the detector's
letterboxed images) from the event loop; one worker thread forms batches of up to `max_batch_size` items and
calls `infer`, off the event loop, which answers one output row per item (outputs, or detector rows). A
request's items may span batches. It knows nothing of HTTP and nothing of ONNX Runtime: `infer` is any callable.

Crops of different test-time pipelines (official, msra, dark, udp: posecore.codecs) share batches freely: each
request crops and normalises before it submits (the UDP crop's matrix differs, the tensor's form does not), and the
network maps each crop to its own heatmaps, so what one crop was cut with never touches another's.

- Admission control: at most `max_queue_items` items committed (reserved by announcements, queued, running);
  beyond that `announce` / `submit` raise PoseError('overloaded') with a Retry-After hint, so overload is a
  fast 429, not a growing queue. A request reserves its items when it announces itself, before it decodes
  anything, and its submission turns that reservation into queued items.
- Waiting: a batch waits up to `max_wait_s` for more items, but only while another request has announced
  that it is preparing items. A lone request is dispatched at once, so batching costs a single client no
  latency, and under concurrency batches fill by themselves while the previous one runs.
- Deadlines: a job whose deadline passed while queued is dropped before compute ('deadline_exceeded');
  a job whose caller went away (cancelled) is dropped too.
- Isolation: if a batch of several jobs fails, each job is retried alone, so one bad item fails only
  its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from posecore.errors import RETRY_AFTER_S, PoseError

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    outputs: np.ndarray
    queue_s: float  # enqueue -> first of its items starts computing
    inference_s: float  # total compute time of the batches that held its items


@dataclass(eq=False)
class _Job:
    items: np.ndarray
    deadline: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.monotonic)
    next_item: int = 0
    done_items: int = 0
    started_at: float | None = None
    inference_s: float = 0.0
    abandoned: bool = False  # the caller timed out or disconnected
    finished: bool = False
    out: np.ndarray | None = None
    # the submitting request's context (its request ID), so the worker thread logs on its behalf
    context: contextvars.Context = field(default_factory=contextvars.copy_context)

    @property
    def size(self) -> int:
        return len(self.items)


class Announcement:
    """A request that is preparing items, and the items it reserved: the worker may wait (up to max_wait) for
    them, and nobody else can take their place. A context manager; `release` is idempotent and thread-safe."""

    def __init__(self, batcher: MicroBatcher, items: int) -> None:
        self._batcher = batcher
        self._open = True
        self.items = items

    def __enter__(self) -> Announcement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def shrink(self, items: int) -> None:
        """Keep only `items` of the reservation (a detector found fewer people than it could have)."""
        with self._batcher._cond:
            if self._open and items < self.items:
                self._batcher._reserved -= self.items - items
                self.items = items
                self._batcher._cond.notify()

    def release(self) -> int:
        """Returns the items it still held (0 when released before)."""
        with self._batcher._cond:  # an RLock: submit() releases while holding it
            if not self._open:
                return 0
            self._open = False
            self._batcher._announced -= 1
            self._batcher._reserved -= self.items
            self._batcher._cond.notify()
            return self.items


class MicroBatcher:
    def __init__(
        self,
        *,
        infer: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,  # no defaults here: the settings (service/settings.py) hold them
        max_wait_s: float,
        max_queue_items: int,
        metrics=None,
        retry_after_s: float = RETRY_AFTER_S["overloaded"],
        name: str = "batcher",
        unit: str = "items",
    ) -> None:
        self._infer = infer
        self.name = name  # its worker thread's name: which model it feeds
        self.unit = unit  # what its items are, in messages: "crops", "images"
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_items = max_queue_items
        self.retry_after_s = retry_after_s
        self._metrics = metrics  # the pose batcher's: its items are the crops of the pose_* series
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._queued_items = 0
        self._inflight_items = 0
        self._announced = 0
        self._reserved = 0  # items announced but not yet submitted
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread.start()

    def close(self, timeout_s: float | None = None) -> None:
        """Stop admitting; the worker finishes every admitted item, then exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def inflight_items(self) -> int:
        return self._inflight_items

    @property
    def queued_items(self) -> int:
        return self._queued_items

    @property
    def reserved_items(self) -> int:
        """Items announced by requests still preparing them (decoding, detecting, cropping)."""
        return self._reserved

    # -- the event-loop side -----------------------------------------------------------------------
    def announce(self, expected_items: int = 0) -> Announcement:
        """A request starts preparing items and reserves `expected_items` (at most what it will submit): an
        overloaded batcher refuses it now, before it spends CPU on decoding an image whose items would be
        refused anyway, and once admitted its items cannot be refused by others' later."""
        with self._cond:
            if expected_items:
                self._admit(expected_items)
            self._announced += 1
            self._reserved += expected_items
        return Announcement(self, expected_items)

    async def submit(self, items: np.ndarray, deadline: float, announcement: Announcement | None = None) -> BatchResult:
        """Queue `items` (N, ...); return their outputs (one row each) once every item has been computed.

        `deadline` is a time.monotonic() value. Raises PoseError: overloaded, shutting_down,
        deadline_exceeded or inference_failed.
        """
        loop = asyncio.get_running_loop()
        job = _Job(items=items, deadline=deadline, loop=loop, future=loop.create_future())
        with self._cond:
            covered = 0 if announcement is None else announcement.release()
            if job.size > covered:  # beyond its reservation: admitted like a new request
                self._admit(job.size)
            elif self._closed:
                raise PoseError("shutting_down", "the service is shutting down", retry_after_s=self.retry_after_s)
            self._queue.append(job)
            self._queued_items += job.size
            self._inflight_items += job.size
            self._publish_depth()
            self._cond.notify()
        try:
            return await asyncio.wait_for(job.future, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            job.abandoned = True
            raise PoseError("deadline_exceeded", f"the request's deadline passed before its {self.unit} were computed",
                            retry_after_s=self.retry_after_s) from None
        except asyncio.CancelledError:
            job.abandoned = True
            raise

    def _admit(self, size: int) -> None:
        if self._closed:
            raise PoseError("shutting_down", "the service is shutting down", retry_after_s=self.retry_after_s)
        # An idle batcher admits any job, so a request larger than the queue limit is still served.
        committed = self._inflight_items + self._reserved
        if committed and committed + size > self.max_queue_items:
            raise PoseError(
                "overloaded",
                f"too many {self.unit} in flight or reserved ({committed} + {size} of {self.max_queue_items}); "
                "retry later",
                retry_after_s=self.retry_after_s,
            )

    # -- the worker thread -------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                self._wait_for_fill()
                slices = self._take_batch()
                self._publish_depth()
            if slices:
                try:
                    self._run(slices)
                except BaseException as exc:  # never let the worker die: nobody would serve the queue again
                    log.exception("batch bookkeeping failed")
                    with self._cond:
                        for job, _, _ in slices:
                            self._fail(job, PoseError("inference_failed", f"batch failed: {type(exc).__name__}"))

    def _wait_for_fill(self) -> None:
        """Hold the batch open while it is not full, someone announced items, and max_wait allows."""
        while self._queued_items < self.max_batch_size and self._announced > 0 and not self._closed:
            remaining = self._queue[0].enqueued_at + self.max_wait_s - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _take_batch(self) -> list[tuple[_Job, int, int]]:
        slices: list[tuple[_Job, int, int]] = []
        count, now = 0, time.monotonic()
        while self._queue and count < self.max_batch_size:
            job = self._queue[0]
            # Drop, uncomputed, what nobody waits for any more: a caller who left, or a deadline that
            # passed before any of the job's items started.
            if job.abandoned or (job.next_item == 0 and now > job.deadline):
                self._fail(job, PoseError("deadline_exceeded", "the request's deadline passed while it was queued",
                                          retry_after_s=self.retry_after_s))
                continue
            take = min(job.size - job.next_item, self.max_batch_size - count)
            slices.append((job, job.next_item, job.next_item + take))
            job.next_item += take
            count += take
            self._queued_items -= take
            if job.started_at is None:
                job.started_at = now
            if job.next_item == job.size:
                self._queue.popleft()
        return slices

    def _run(self, slices: list[tuple[_Job, int, int]]) -> None:
        parts = [job.items[start:stop] for job, start, stop in slices]
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        started = time.perf_counter()
        try:
            outputs = self._infer(batch)
            if len(outputs) != len(batch):  # numpy would broadcast a short answer into wrong results
                raise RuntimeError(f"the backend returned {len(outputs)} outputs for {len(batch)} {self.unit}")
        except Exception as exc:  # isolate: retry each job's items alone
            if len(slices) > 1:
                for one in slices:
                    self._run([one])
                return
            job = slices[0][0]
            job.context.run(log.exception, "inference failed for a batch of %d %s", len(batch), self.unit)
            message = exc.message if isinstance(exc, PoseError) else f"inference failed: {type(exc).__name__}"
            with self._cond:
                self._fail(job, PoseError("inference_failed", message))
            return
        elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(batch))
            self._metrics.crops.inc(len(batch))
        offset = 0
        with self._cond:
            for job, start, stop in slices:
                n = stop - start
                if job.out is None:
                    job.out = np.empty((job.size, *outputs.shape[1:]), outputs.dtype)
                job.out[start:stop] = outputs[offset : offset + n]
                offset += n
                job.done_items += n
                job.inference_s += elapsed
                if job.done_items == job.size:
                    queue_s = (job.started_at or job.enqueued_at) - job.enqueued_at
                    self._finish(job, result=BatchResult(job.out, queue_s, job.inference_s))

    def _fail(self, job: _Job, error: PoseError) -> None:
        if job.next_item < job.size and job in self._queue:  # drop its remaining items
            self._queue.remove(job)
            self._queued_items -= job.size - job.next_item
            job.next_item = job.size
        self._finish(job, error=error)

    def _finish(self, job: _Job, result: BatchResult | None = None, error: PoseError | None = None) -> None:
        """Resolve a job exactly once (called under the lock)."""
        if job.finished:
            return
        job.finished = True
        self._inflight_items -= job.size
        self._publish_depth()
        with contextlib.suppress(RuntimeError):  # the caller's event loop is gone (shutdown): nobody to tell
            job.loop.call_soon_threadsafe(_resolve, job.future, result, error)

    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._queued_items)
            self._metrics.inflight_crops.set(self._inflight_items)


def _resolve(future: asyncio.Future, result: BatchResult | None, error: PoseError | None) -> None:
    if future.done():  # the caller gave up already
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
