"""PoseClient: the blocking client. Thread-safe; `max_concurrency` bounds the requests in flight across every
thread that shares it (pose_many's own workers included)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
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
from pose_client.deadline import CallDeadline, rebuilt
from pose_client.errors import PoseClientError
from pose_client.inputs import Box, ImageInput, boxes_per_image, read_image
from pose_client.models import PoseResult, RenderedImage
from pose_client.options import PoseOptions
from pose_client.progress import make_progress
from pose_client.retry import RetryPolicy, RetryState
from pose_client.video import VideoFrame, VideoSummary, pose_video, stream


class PoseClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 max_concurrency: int = DEFAULT_CONCURRENCY, max_retries: int = 8,
                 retry: RetryPolicy | None = None, options: PoseOptions | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout  # each call's total, from its start to the last byte of its answer, retries included
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.options = options or PoseOptions()  # for every call that brings none
        self._gate = threading.BoundedSemaphore(max_concurrency)
        self._auth = auth_headers(api_key)
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
    def pose(self, image: ImageInput, boxes: Sequence[Box] | None = None,
             options: PoseOptions | None = None) -> PoseResult:
        """Keypoints of the people in one image. boxes None: the service's person detector finds them (without one,
        or with detect=False, the whole image is one person); []: nobody. options None: the client's."""
        return pose_result(self._send(pose_call(read_image(image), boxes, options or self.options)))

    def render(self, image: ImageInput, boxes: Sequence[Box] | None = None, options: PoseOptions | None = None,
               format: str = "jpeg") -> RenderedImage:
        """The image with the skeletons drawn (JPEG or PNG bytes in `.content`)."""
        return rendered_image(self._send(render_call(read_image(image), boxes, options or self.options, format)))

    def model(self) -> dict[str, Any]:
        """The served model's card (GET /v1/model)."""
        return model_card(self._send(Call("GET", "/v1/model")))

    def pose_video(self, path: str | Path, *, smooth: bool | None = None, fps: float | None = None,
                   detect_every: int | None = None, flip: bool | None = None,
                   **options: Any) -> Iterator[VideoFrame | VideoSummary]:
        """POST /v1/pose/video: each frame's persons with track IDs as the service streams them, then the
        summary. `options`: smooth_min_cutoff, smooth_beta, smooth_d_cutoff (README "Video and live streams")."""
        # not under the concurrency gate: a generator the caller abandons would hold it (the service bounds
        # concurrent videos itself, POSE_MAX_CONCURRENT_VIDEOS)
        yield from pose_video(self._http, self.retry, path, {"smooth": smooth, "fps": fps,
                                                             "detect_every": detect_every,
                                                             "flip": self.options.flip if flip is None else flip,
                                                             **options},
                              self.timeout)

    def stream(self, frames: Iterable[bytes], **options: Any) -> Iterator[VideoFrame]:
        """WS /v1/pose/stream: send encoded frames (JPEG/PNG bytes), get one answer per frame served (needs
        `websockets`: pip install pose-client[stream])."""
        yield from stream(self.base_url, self._auth, frames, options)

    @overload
    def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                  options: PoseOptions | None = None, progress: bool = False,
                  return_exceptions: Literal[False] = False) -> list[PoseResult]: ...

    @overload
    def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                  options: PoseOptions | None = None, progress: bool = False, *,
                  return_exceptions: Literal[True]) -> list[PoseResult | PoseClientError]: ...

    def pose_many(self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Box] | None] | None = None,
                  options: PoseOptions | None = None, progress: bool = False,
                  return_exceptions: bool = False) -> list[PoseResult] | list[PoseResult | PoseClientError]:
        """One result per image, in input order, at most `max_concurrency` in flight. `boxes`: one entry per image
        (None: whole image). With return_exceptions, a failed image's entry is its exception; otherwise the first
        failure cancels what has not started and is raised."""
        per_image = boxes_per_image(len(images), boxes)
        bar = make_progress(len(images), progress)
        results: list[Any] = [None] * len(images)

        def one(index: int) -> None:
            try:
                results[index] = self.pose(images[index], per_image[index], options)
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
        deadline = CallDeadline(self.timeout, self.base_url + call.path)
        state = RetryState(self.retry)
        with self._gate:  # held while waiting to retry too: a shed client must not add load elsewhere
            while True:
                try:
                    response = self._attempt(call, deadline, state.attempts)
                except httpx.HTTPError as error:
                    time.sleep(delay_after_error(error, state, deadline))
                    continue
                if response.is_success:
                    return response
                time.sleep(delay_after_response(response, state, deadline))

    def _attempt(self, call: Call, deadline: CallDeadline, attempts: int) -> httpx.Response:
        """One request, its answer streamed and the call's deadline checked after every read: httpx's timeout
        bounds each read only (and is set to what is left of the deadline)."""
        request = self._http.build_request(call.method, call.path, timeout=deadline.left(attempts),
                                           **call.request_kwargs())
        streamed = self._http.send(request, stream=True)
        if streamed.is_stream_consumed:  # a transport that answers from memory (httpx.MockTransport)
            return streamed
        try:
            raw = bytearray()
            for chunk in streamed.iter_raw():
                raw += chunk
                deadline.check(attempts)
        finally:
            streamed.close()
        return rebuilt(streamed, bytes(raw))

