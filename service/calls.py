"""A call of many images (a /v1 batch, a v2 request): its items run concurrently under the call's one deadline.

Two rules:
- A call admits its own items: an item refused as overloaded while the call's own items hold the capacity waits
  for one of them and tries again (never past the deadline), so an acceptable call on an idle server is never
  refused in part. The first item runs alone: if it is refused as overloaded, the whole call is (429), before
  other work.
- All or nothing (`name_error` given, v2): the first failed item fails the call at once; the other items are
  cancelled, so their queued crops are dropped uncomputed and their reservations released.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from posecore.errors import PoseError

Item = TypeVar("Item")
Result = TypeVar("Result")
ItemNamer = Callable[[PoseError, int], PoseError]  # (an item's error, its index) -> the call's error


async def run_call(items: Sequence[Item | PoseError], one: Callable[[Item], Awaitable[Result]], deadline: float, *,
                   name_error: ItemNamer | None, concurrency: int, retry_after_s: float,
                   ) -> list[Result | PoseError]:
    """Each item's result or error, in order; items given as PoseError are passed through."""
    results: list[Result | PoseError | None] = [i if isinstance(i, PoseError) else None for i in items]
    pending = [(i, item) for i, item in enumerate(items) if not isinstance(item, PoseError)]
    own: _OwnItems[Result] = _OwnItems(deadline, retry_after_s)
    gate = asyncio.Semaphore(concurrency)

    async def run(index: int, item: Item, refuse_call: bool = False) -> None:
        async with gate:
            outcome = await own.run(lambda: one(item), refuse_call)
        if name_error is not None and isinstance(outcome, PoseError):
            raise name_error(outcome, index)
        results[index] = outcome

    if pending:
        await run(*pending[0], refuse_call=True)
    tasks = [asyncio.ensure_future(run(i, item)) for i, item in pending[1:]]
    try:
        for finished in asyncio.as_completed(tasks):
            await finished  # all or nothing: the first failure propagates, and the others are cancelled below
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # their reservations are released before we answer
    answered: list[Result | PoseError] = []
    for result in results:  # every slot is filled: one answer per item, in order
        assert result is not None
        answered.append(result)
    return answered


class _OwnItems(Generic[Result]):
    """The items of one call in flight; an overloaded item waits while its siblings hold the capacity."""

    def __init__(self, deadline: float, retry_after_s: float) -> None:
        self.deadline = deadline
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self.finished = 0
        self._changed = asyncio.Event()

    async def run(self, attempt: Callable[[], Awaitable[Result]], refuse_call: bool = False) -> Result | PoseError:
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
            try:
                await asyncio.wait_for(self._sibling_finished(seen), max(0.0, self.deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return PoseError("deadline_exceeded", "the call's deadline passed while this image waited for the "
                                 "call's other images", retry_after_s=self.retry_after_s)

    async def _sibling_finished(self, seen: int) -> None:
        while self.finished == seen + 1:  # + 1: our own failed attempt
            await self._changed.wait()
