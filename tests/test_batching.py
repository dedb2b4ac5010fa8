"""The micro-batcher with a fake backend: pooling, max wait, splitting, overload, deadlines, cancellation,
one bad item, draining on close.

Ordering comes from events, not sleeps: the fake backend reports each batch it enters (`wait_entered`) and can be
held at a gate; `enqueued()` gives the event loop one turn, after which every task created before it has run up to
its first await, i.e. has queued its crops (submit queues synchronously before it awaits).
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from posecore.errors import PoseError
from service.batching import MicroBatcher
from tests.fakes import RecordingInfer


def crops(*values: float) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, np.float32)[:, None, None, None], (len(values), 3, 4, 4)).copy()


def far_deadline() -> float:
    return time.monotonic() + 10


async def enqueued() -> None:
    """One turn of the event loop: every task created before this call has queued its crops."""
    await asyncio.sleep(0)


async def stuck_worker(batcher: MicroBatcher, backend: RecordingInfer, value: float) -> asyncio.Task:
    """Submit one crop and return once the worker is inside its batch, held at the backend's closed gate."""
    blocker = asyncio.create_task(batcher.submit(crops(value), far_deadline()))
    assert await backend.wait_entered(), f"the worker never started crop {value}"
    return blocker


async def drained(batcher: MicroBatcher) -> None:
    """Close the batcher: returns once the worker has finished or dropped every queued crop and exited."""
    await asyncio.to_thread(batcher.close, 5)


@pytest.fixture
def make_batcher():
    created = []

    def make(infer, *, max_batch_size=8, max_wait_s=0.0, max_queue_items=64, metrics=None):
        batcher = MicroBatcher(infer=infer, max_batch_size=max_batch_size, max_wait_s=max_wait_s,
                               max_queue_items=max_queue_items, metrics=metrics)
        batcher.start()
        created.append(batcher)
        return batcher

    yield make
    for batcher in created:
        batcher.close(timeout_s=5)


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_pooled_and_each_gets_its_own_results(make_batcher):
    backend = RecordingInfer(delay_s=0.02)
    batcher = make_batcher(backend.infer, max_batch_size=8, max_wait_s=0.01)

    async def main():
        return await asyncio.gather(*(batcher.submit(crops(float(i)), far_deadline()) for i in range(16)))

    results = run(main())
    for i, result in enumerate(results):
        assert result.outputs.shape == (1, 1, 2, 2)
        assert np.all(result.outputs == 2 * i)
    assert max(backend.sizes) > 1, backend.sizes  # pooled across requests
    assert sum(backend.sizes) == 16 and max(backend.sizes) <= 8


def test_a_lone_request_is_dispatched_without_waiting(make_batcher):
    backend = RecordingInfer()
    batcher = make_batcher(backend.infer, max_batch_size=8, max_wait_s=1.0)

    async def main():
        started = time.perf_counter()
        await batcher.submit(crops(1.0), far_deadline())
        return time.perf_counter() - started

    assert run(main()) < 0.5  # nobody announced more crops, so max_wait (1 s) is not spent


def test_batch_waits_at_most_max_wait_for_announced_crops(make_batcher):
    backend = RecordingInfer()
    batcher = make_batcher(backend.infer, max_batch_size=8, max_wait_s=0.15)

    async def main():
        announced = batcher.announce()  # a request "preparing" that never submits
        started = time.perf_counter()
        await batcher.submit(crops(1.0), far_deadline())
        elapsed = time.perf_counter() - started
        announced.release()
        return elapsed

    elapsed = run(main())
    assert 0.1 <= elapsed < 1.0


def test_announced_crops_join_the_waiting_batch(make_batcher):
    backend = RecordingInfer()
    batcher = make_batcher(backend.infer, max_batch_size=8, max_wait_s=10.0)

    async def main():
        second = batcher.announce()
        first = asyncio.create_task(batcher.submit(crops(1.0), far_deadline()))
        await enqueued()
        # The worker holds the batch open for the announced crops: nothing reaches the backend meanwhile.
        assert not await backend.wait_entered(timeout_s=0.3), "the batch left without the announced crops"
        started = time.perf_counter()
        await batcher.submit(crops(2.0), far_deadline(), second)
        await first
        return time.perf_counter() - started

    assert run(main()) < 5.0  # the announced crops closed the batch, not the 10 s max_wait
    assert backend.sizes == [2]


def test_a_large_request_is_split_across_batches_in_order(make_batcher):
    backend = RecordingInfer()
    batcher = make_batcher(backend.infer, max_batch_size=8, max_wait_s=0.0)
    values = [float(v) for v in range(20)]
    result = run(batcher.submit(crops(*values), far_deadline()))
    assert backend.sizes == [8, 8, 4]
    assert np.array_equal(result.outputs[:, 0, 0, 0], 2 * np.asarray(values, np.float32))


def test_overload_is_refused_with_retry_after(make_batcher):
    backend = RecordingInfer(gate_open=False)  # inference blocked: crops pile up
    batcher = make_batcher(backend.infer, max_batch_size=2, max_wait_s=0.0, max_queue_items=4)

    async def main():
        accepted = [asyncio.create_task(batcher.submit(crops(1.0, 2.0), far_deadline())) for _ in range(2)]
        await enqueued()
        assert batcher.inflight_items == 4
        with pytest.raises(PoseError) as refused:
            await batcher.submit(crops(3.0), far_deadline())
        backend.gate.set()
        await asyncio.gather(*accepted)  # nothing accepted is lost
        return refused.value

    error = run(main())
    assert error.code == "overloaded" and error.status == 429 and error.retry_after_s >= 1
    assert batcher.inflight_items == 0


def test_an_idle_batcher_admits_a_request_larger_than_the_queue(make_batcher):
    batcher = make_batcher(RecordingInfer().infer, max_batch_size=2, max_queue_items=2)
    result = run(batcher.submit(crops(1, 2, 3, 4, 5), far_deadline()))
    assert len(result.outputs) == 5


def test_expired_work_is_dropped_before_compute(make_batcher):
    backend = RecordingInfer(gate_open=False)
    batcher = make_batcher(backend.infer, max_batch_size=1, max_wait_s=0.0)

    async def main():
        blocker = await stuck_worker(batcher, backend, 1.0)
        late = asyncio.create_task(batcher.submit(crops(7.0), time.monotonic() + 0.1))
        with pytest.raises(PoseError) as error:
            await late  # its deadline passes while it is queued behind the stuck batch
        assert batcher.queued_items == 1, "the expired crop is still queued, not computed"
        backend.gate.set()
        await blocker
        await drained(batcher)
        return error.value

    error = run(main())
    assert error.code == "deadline_exceeded" and error.status == 504
    assert backend.computed == {1.0}  # 7.0 was dropped uncomputed
    assert batcher.inflight_items == 0


def test_cancelled_requests_are_not_computed(make_batcher):
    backend = RecordingInfer(gate_open=False)
    batcher = make_batcher(backend.infer, max_batch_size=1, max_wait_s=0.0)

    async def main():
        blocker = await stuck_worker(batcher, backend, 1.0)
        gone = asyncio.create_task(batcher.submit(crops(9.0), far_deadline()))
        await enqueued()
        assert batcher.queued_items == 1
        gone.cancel()  # the client disconnected
        with pytest.raises(asyncio.CancelledError):
            await gone
        backend.gate.set()
        await blocker
        await drained(batcher)

    run(main())
    assert backend.computed == {1.0}  # 9.0 was dropped uncomputed
    assert batcher.inflight_items == 0


def test_one_bad_item_fails_only_its_own_request(make_batcher):
    backend = RecordingInfer(gate_open=False)
    batcher = make_batcher(backend.infer, max_batch_size=8, max_wait_s=0.0)

    async def main():
        first = await stuck_worker(batcher, backend, 0.0)
        # these three queue up behind the blocked batch and will share the next one
        good1 = asyncio.create_task(batcher.submit(crops(1.0), far_deadline()))
        bad = asyncio.create_task(batcher.submit(crops(float("nan")), far_deadline()))
        good2 = asyncio.create_task(batcher.submit(crops(2.0, 3.0), far_deadline()))
        await enqueued()
        assert batcher.queued_items == 4
        backend.gate.set()
        return await asyncio.gather(first, good1, bad, good2, return_exceptions=True)

    first, good1, bad, good2 = run(main())
    assert np.all(first.outputs == 0.0)
    assert isinstance(bad, PoseError) and bad.code == "inference_failed"
    assert np.all(good1.outputs == 2.0)
    assert np.array_equal(good2.outputs[:, 0, 0, 0], [4.0, 6.0])
    assert backend.attempts == [1, 4, 1, 1, 2]  # the three shared one batch, which failed and was retried per job


def test_close_finishes_admitted_work_then_refuses(make_batcher):
    backend = RecordingInfer(delay_s=0.01)
    batcher = make_batcher(backend.infer, max_batch_size=2, max_wait_s=0.0)

    async def main():
        tasks = [asyncio.create_task(batcher.submit(crops(float(i)), far_deadline())) for i in range(6)]
        await enqueued()
        assert batcher.inflight_items == 6  # all admitted before close
        await drained(batcher)
        results = await asyncio.gather(*tasks)
        with pytest.raises(PoseError) as refused:
            await batcher.submit(crops(1.0), far_deadline())
        return results, refused.value

    results, refused = run(main())
    assert len(results) == 6 and refused.code == "shutting_down"


def test_timings_report_queue_and_inference(make_batcher):
    backend = RecordingInfer(delay_s=0.03)
    batcher = make_batcher(backend.infer, max_batch_size=8, max_wait_s=0.0)
    result = run(batcher.submit(crops(1.0), far_deadline()))
    assert result.inference_s >= 0.03 and result.queue_s >= 0


def test_a_backend_answer_of_the_wrong_size_fails_its_requests_and_the_worker_lives_on(make_batcher):
    backend = RecordingInfer()
    calls = {"n": 0}

    def short_once(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        out = backend.infer(batch)
        return out[:-1] if calls["n"] == 1 else out  # one row missing: bookkeeping, not inference, fails

    batcher = make_batcher(short_once, max_batch_size=8, max_wait_s=0.0)

    async def main():
        with pytest.raises(PoseError) as error:
            await batcher.submit(crops(1.0, 2.0), far_deadline())
        return error.value, await batcher.submit(crops(3.0), far_deadline())

    error, later = run(main())
    assert error.code == "inference_failed"
    assert np.all(later.outputs == 6.0) and batcher.inflight_items == 0


class Instrument:
    """A gauge, counter or histogram that records its values; it raises while `broken` is set."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.broken = False

    def record(self, value: float) -> None:
        if self.broken:
            raise RuntimeError("metrics backend down")
        self.values.append(value)

    set = inc = observe = record


class FakeMetrics:
    """The batcher's slice of service.metrics.Metrics."""

    def __init__(self) -> None:
        self.queue_depth, self.inflight_crops, self.batch_size, self.crops = (Instrument() for _ in range(4))


def test_the_worker_survives_its_own_bookkeeping_failing(make_batcher):
    metrics = FakeMetrics()
    metrics.batch_size.broken = True  # anything after inference that raises (here: the batch-size histogram)
    batcher = make_batcher(RecordingInfer().infer, max_batch_size=8, max_wait_s=0.0, metrics=metrics)

    async def main():
        with pytest.raises(PoseError) as error:
            await batcher.submit(crops(1.0), far_deadline())
        metrics.batch_size.broken = False
        return error.value, await batcher.submit(crops(2.0), far_deadline())

    error, later = run(main())
    assert error.code == "inference_failed" and np.all(later.outputs == 4.0)
    assert batcher.inflight_items == 0
    assert metrics.batch_size.values == [1] and metrics.crops.values == [1]  # the second batch was recorded
    assert metrics.inflight_crops.values[-1] == 0 and metrics.queue_depth.values[-1] == 0


def test_an_overloaded_batcher_refuses_at_announcement_before_any_preparation(make_batcher):
    backend = RecordingInfer(gate_open=False)
    batcher = make_batcher(backend.infer, max_batch_size=2, max_wait_s=0.0, max_queue_items=2)

    async def main():
        accepted = asyncio.create_task(batcher.submit(crops(1.0, 2.0), far_deadline()))
        await enqueued()
        with pytest.raises(PoseError) as refused:
            batcher.announce(expected_items=1)
        backend.gate.set()
        await accepted
        batcher.announce(expected_items=1).release()  # idle again: admitted
        return refused.value

    assert run(main()).code == "overloaded"


def test_each_batcher_names_its_thread_and_its_items() -> None:
    """The detector's batcher is the same class: its thread and its refusals say what it carries."""
    backend = RecordingInfer(gate_open=False)
    batcher = MicroBatcher(infer=backend.infer, max_batch_size=1, max_wait_s=0.0, max_queue_items=1,
                           name="detector-batcher", unit="images")
    batcher.start()
    try:
        assert "detector-batcher" in {thread.name for thread in threading.enumerate()}

        async def main() -> PoseError:
            held = await stuck_worker(batcher, backend, 1.0)
            try:
                await batcher.submit(crops(2.0), far_deadline())
            except PoseError as error:
                return error
            finally:
                backend.gate.set()
                await held
            raise AssertionError("a second image beyond max_queue_items was admitted")

        refused = run(main())
        assert refused.code == "overloaded" and "too many images in flight" in refused.message
    finally:
        batcher.close(timeout_s=5)
