"""AsyncPoseClient: the asyncio client, the same calls as PoseClient. `max_concurrency` bounds the requests in
flight across every task that shares it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal, overload

import httpx

from pose_client.calls import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    Call,
    auth_headers,
    delay_after_error,
    delay_after_response,
    model_card,
    pose_call,
    pose_result,
    render_call,
    rendered_image,
)
from pose_client.deadline import CallDeadline
from pose_client.errors import PoseClientError
from pose_client.inputs import Box, ImageInput, boxes_per_image, read_image
from pose_client.models import PoseResult, RenderedImage
from pose_client.options import PoseOptions
from pose_client.progress import make_progress
from pose_client.retry import RetryPolicy, RetryState


class AsyncPoseClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 max_concurrency: int = DEFAULT_CONCURRENCY, max_retries: int = 8,
                 retry: RetryPolicy | None = None, options: PoseOptions | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout  # each call's total, from its start to the last byte of its answer, retries included
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.options = options or PoseOptions()  # for every call that brings none
        self._gate = asyncio.Semaphore(max_concurrency)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout, transport=transport,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    async def __aenter__(self) -> AsyncPoseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- calls ----------------------------------------------------------------------------------
    async def pose(self, image: ImageInput, boxes: Sequence[Box] | None = None,
                   options: PoseOptions | None = None) -> PoseResult:
        """Keypoints of the people in one image. boxes None: the service's person detector finds them (without one,
        or with detect=False, the whole image is one person); []: nobody. options None: the client's."""
        return pose_result(await self._send(pose_call(read_image(image), boxes, options or self.options)))

    async def render(self, image: ImageInput, boxes: Sequence[Box] | None = None, options: PoseOptions | None = None,
                     format: str = "jpeg") -> RenderedImage:
        """The image with the skeletons drawn (JPEG or PNG bytes in `.content`)."""
        return rendered_image(await self._send(render_call(read_image(image), boxes, options or self.options, format)))

    async def model(self) -> dict[str, Any]:
        return model_card(await self._send(Call("GET", "/v1/model")))

    @overload
    async def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                        options: PoseOptions | None = None, progress: bool = False,
                        return_exceptions: Literal[False] = False) -> list[PoseResult]: ...

    @overload
    async def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                        options: PoseOptions | None = None, progress: bool = False, *,
                        return_exceptions: Literal[True]) -> list[PoseResult | PoseClientError]: ...

    async def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                        options: PoseOptions | None = None, progress: bool = False,
                        return_exceptions: bool = False) -> list[PoseResult] | list[PoseResult | PoseClientError]:
        """One result per image, in input order. A fixed set of `max_concurrency` workers takes the images in turn,
        so only that many are read into memory at once. With return_exceptions, a failed image's entry is its
        exception; otherwise the first failure cancels the rest and is raised."""
        per_image = boxes_per_image(len(images), boxes)
        bar = make_progress(len(images), progress)
        results: list[Any] = [None] * len(images)
        indices = iter(range(len(images)))

        async def worker() -> None:
            for index in indices:  # one shared iterator: each index goes to exactly one worker
                try:
                    results[index] = await self.pose(images[index], per_image[index], options)
                except PoseClientError as error:
                    if not return_exceptions:
                        raise
                    results[index] = error
                finally:
                    bar.update(1)

        workers = [asyncio.create_task(worker()) for _ in range(min(self.max_concurrency, len(images)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            bar.close()
        return results

    # -- transport ------------------------------------------------------------------------------
    async def _send(self, call: Call) -> httpx.Response:
        deadline = CallDeadline(self.timeout, self.base_url + call.path)
        state = RetryState(self.retry)
        async with self._gate:  # held while waiting to retry too: a shed client must not add load elsewhere
            while True:
                try:
                    response = await self._attempt(call, deadline, state.attempts)
                except httpx.HTTPError as error:
                    await asyncio.sleep(delay_after_error(error, state, deadline))
                    continue
                if response.is_success:
                    return response
                await asyncio.sleep(delay_after_response(response, state, deadline))

    async def _attempt(self, call: Call, deadline: CallDeadline, attempts: int) -> httpx.Response:
        """One request, its answer read in full, cancelled when the call's deadline passes (however slowly the
        server sends)."""
        remaining = deadline.left(attempts)
        request = self._http.request(call.method, call.path, timeout=remaining, **call.request_kwargs())
        try:
            return await asyncio.wait_for(request, remaining)
        except asyncio.TimeoutError:
            raise deadline.expired_error(attempts) from None
