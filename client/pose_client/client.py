"""PoseClient: the blocking client. Thread-safe; `max_concurrency` bounds the requests in flight across every
thread that shares it (pose_many's own workers included)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Literal, overload

import httpx

from pose_client.calls import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    Call,
    auth_headers,
    delay_after_error,
    delay_after_response,
    pose_call,
    pose_result,
    render_call,
    rendered_image,
)
from pose_client.errors import PoseClientError
from pose_client.inputs import Box, ImageInput, boxes_per_image, read_image
from pose_client.models import PoseResult, RenderedImage
from pose_client.progress import make_progress
from pose_client.retry import RetryPolicy, RetryState


class PoseClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 max_concurrency: int = DEFAULT_CONCURRENCY, max_retries: int = 8,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self._gate = threading.BoundedSemaphore(max_concurrency)
        self._http = httpx.Client(
            base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout, transport=transport,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    def __enter__(self) -> PoseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- calls ----------------------------------------------------------------------------------
    def pose(self, image: ImageInput, boxes: Sequence[Box] | None = None, flip: bool | None = None,
             box_format: str = "xywh", detect: bool | None = None, decode: str | None = None) -> PoseResult:
        """Keypoints of the people in one image. boxes None: the service's person detector finds them (without one,
        or with detect=False, the whole image is one person); []: nobody. flip None: the service's default. decode
        (official, msra, dark, udp) None: the model card's pipeline; the result's `decode` says which ran."""
        return pose_result(self._send(pose_call(read_image(image), boxes, flip, box_format, detect, decode)))

    def render(self, image: ImageInput, boxes: Sequence[Box] | None = None, flip: bool | None = None,
               box_format: str = "xywh", detect: bool | None = None, format: str = "jpeg",
               decode: str | None = None) -> RenderedImage:
        """The image with the skeletons drawn (JPEG or PNG bytes in `.content`)."""
        call = render_call(read_image(image), boxes, flip, box_format, detect, format, decode)
        return rendered_image(self._send(call))

    def model(self) -> dict[str, Any]:
        """The served model's card (GET /v1/model)."""
        card: dict[str, Any] = self._send(Call("GET", "/v1/model")).json()
        return card

    @overload
    def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                  flip: bool | None = None, box_format: str = "xywh", detect: bool | None = None,
                  progress: bool = False,
                  return_exceptions: Literal[False] = False, decode: str | None = None) -> list[PoseResult]: ...

    @overload
    def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                  flip: bool | None = None, box_format: str = "xywh", detect: bool | None = None,
                  progress: bool = False, *,
                  return_exceptions: Literal[True], decode: str | None = None,
                  ) -> list[PoseResult | PoseClientError]: ...

    def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                  flip: bool | None = None, box_format: str = "xywh", detect: bool | None = None,
                  progress: bool = False,
                  return_exceptions: bool = False, decode: str | None = None,
                  ) -> list[PoseResult] | list[PoseResult | PoseClientError]:
        """One result per image, in input order, at most `max_concurrency` in flight. `boxes`: one entry per image
        (None: whole image). With return_exceptions, a failed image's entry is its exception; otherwise the first
        failure cancels what has not started and is raised."""
        per_image = boxes_per_image(len(images), boxes)
        bar = make_progress(len(images), progress)
        results: list[Any] = [None] * len(images)

        def one(index: int) -> None:
            try:
                results[index] = self.pose(images[index], per_image[index], flip, box_format, detect, decode)
            except PoseClientError as error:
                if not return_exceptions:
                    raise
                results[index] = error
            finally:
                bar.update(1)

        try:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, max(1, len(images))),
                                    thread_name_prefix="pose-client") as pool:
                futures = [pool.submit(one, i) for i in range(len(images))]
                try:
                    for future in as_completed(futures):
                        future.result()  # the first failure (without return_exceptions) raises here
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        finally:
            bar.close()
        return results

    # -- transport ------------------------------------------------------------------------------
    def _send(self, call: Call) -> httpx.Response:
        state = RetryState(self.retry)
        with self._gate:  # held while waiting to retry too: a shed client must not add load elsewhere
            while True:
                try:
                    response = self._http.request(call.method, call.path, **call.request_kwargs())
                except httpx.HTTPError as error:
                    time.sleep(delay_after_error(error, state, self.base_url + call.path))
                    continue
                if response.is_success:
                    return response
                time.sleep(delay_after_response(response, state))

