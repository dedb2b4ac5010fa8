"""What the sync and async clients share: the requests they build, how answers become results, and the retry
decision after each attempt. The two clients only differ in how they send and how they sleep."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from pose_client.errors import PoseConnectionError, PoseTimeoutError, error_from_response, retry_after_seconds
from pose_client.inputs import Box, pose_form
from pose_client.models import PoseResult, RenderedImage
from pose_client.retry import RETRY_TRANSPORT_ERRORS, RetryState, should_retry_status

RENDER_FORMATS = ("jpeg", "png")
DEFAULT_TIMEOUT_S = 60.0  # per attempt; a cold service with a big queue may take seconds
DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": self.params}
        if self.files is not None:
            kwargs["files"] = self.files
        if self.data is not None:
            kwargs["data"] = self.data
        return kwargs


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def pose_call(image: bytes, boxes: Sequence[Box] | None, flip: bool | None, box_format: str,
              detect: bool | None, decode: str | None = None) -> Call:
    data, files = pose_form(image, boxes, flip, box_format, detect, decode)
    return Call("POST", "/v1/pose", data=data, files=files)


def render_call(image: bytes, boxes: Sequence[Box] | None, flip: bool | None, box_format: str,
                detect: bool | None, image_format: str, decode: str | None = None) -> Call:
    if image_format not in RENDER_FORMATS:
        raise ValueError(f"format must be one of {RENDER_FORMATS}, not {image_format!r}")
    data, files = pose_form(image, boxes, flip, box_format, detect, decode)
    return Call("POST", "/v1/pose/render", params={"format": image_format}, data=data, files=files)


def pose_result(response: httpx.Response) -> PoseResult:
    return PoseResult.from_json(response.json(), response.headers.get("x-request-id"))


def rendered_image(response: httpx.Response) -> RenderedImage:
    trained = response.headers.get("x-model-trained")
    return RenderedImage(
        content=response.content,
        media_type=response.headers.get("content-type", "").split(";")[0],
        trained=None if trained is None else trained.lower() == "true",
        timings_ms=server_timing(response.headers.get("server-timing", "")),
        request_id=response.headers.get("x-request-id"),
        decode=response.headers.get("x-pose-decode"),
    )


def server_timing(header: str) -> dict[str, float]:
    """`decode;dur=1.2, inference;dur=8.0` -> {"decode": 1.2, "inference": 8.0}."""
    timings: dict[str, float] = {}
    for entry in header.split(","):
        name, _, rest = entry.strip().partition(";")
        for param in rest.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                with contextlib.suppress(ValueError):  # a malformed entry is skipped, not fatal
                    timings[name] = float(value)
    return timings


def delay_after_response(response: httpx.Response, state: RetryState) -> float:
    """Seconds to wait before the next attempt after an error answer; raises the typed error when giving up."""
    if should_retry_status(response.status_code):
        delay = state.next_delay(retry_after_seconds(response))
        if delay is not None:
            return delay
    raise error_from_response(response, state.attempts)


def delay_after_error(error: httpx.HTTPError, state: RetryState, url: str) -> float:
    """Seconds to wait after a transport failure; raises PoseConnectionError (or its timeout kind) when giving up."""
    if isinstance(error, RETRY_TRANSPORT_ERRORS):
        delay = state.next_delay(None)
        if delay is not None:
            return delay
    kind = PoseTimeoutError if isinstance(error, httpx.TimeoutException) else PoseConnectionError
    raise kind(f"{url}: {type(error).__name__}: {error}", state.attempts) from error
