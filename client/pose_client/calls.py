"""What the sync and async clients share: the requests they build, how answers become results, and the retry
decision after each attempt. The two clients only differ in how they send and how they sleep."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from pose_client.deadline import CallDeadline
from pose_client.errors import (
    InvalidResponseError,
    PoseConnectionError,
    PoseTimeoutError,
    error_from_response,
    retry_after_seconds,
)
from pose_client.fields import MalformedAnswer, obj
from pose_client.inputs import Box, pose_form
from pose_client.models import PoseResult, RenderedImage
from pose_client.options import PoseOptions
from pose_client.retry import RETRY_TRANSPORT_ERRORS, RetryState, should_retry_status

RENDER_FORMATS = ("jpeg", "png")
DEFAULT_TIMEOUT_S = 60.0  # per call, retries included; a cold service with a big queue may take seconds
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


def pose_call(image: bytes, boxes: Sequence[Box] | None, options: PoseOptions) -> Call:
    data, files = pose_form(image, boxes, options)
    return Call("POST", "/v1/pose", data=data, files=files)


def render_call(image: bytes, boxes: Sequence[Box] | None, options: PoseOptions, image_format: str) -> Call:
    if image_format not in RENDER_FORMATS:
        raise ValueError(f"format must be one of {RENDER_FORMATS}, not {image_format!r}")
    data, files = pose_form(image, boxes, options)
    return Call("POST", "/v1/pose/render", params={"format": image_format}, data=data, files=files)


def answer_json(response: httpx.Response) -> object:
    """The parsed body of a success answer; InvalidResponseError when it is not JSON (a proxy's HTML page)."""
    try:
        return json.loads(response.content)
    except ValueError:  # also UnicodeDecodeError
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise InvalidResponseError(f"the body is not JSON ({kind}, {len(response.content)} bytes)",
                                   response.status_code, response.headers.get("x-request-id")) from None


def pose_result(response: httpx.Response) -> PoseResult:
    request_id = response.headers.get("x-request-id")
    try:
        return PoseResult.from_json(answer_json(response), request_id)
    except MalformedAnswer as error:
        raise InvalidResponseError(str(error), response.status_code, request_id) from None


def model_card(response: httpx.Response) -> dict[str, Any]:
    try:
        return obj(answer_json(response), "")
    except MalformedAnswer as error:
        raise InvalidResponseError(str(error), response.status_code,
                                   response.headers.get("x-request-id")) from None


def rendered_image(response: httpx.Response) -> RenderedImage:
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("image/jpeg", "image/png"):
        raise InvalidResponseError(f"expected a JPEG or PNG image, got {media_type or 'no content type'}",
                                   response.status_code, response.headers.get("x-request-id"))
    trained = response.headers.get("x-model-trained")
    return RenderedImage(
        content=response.content,
        media_type=media_type,
        trained=None if trained is None else trained.lower() == "true",
        timings_ms=server_timing(response.headers.get("server-timing", "")),
        request_id=response.headers.get("x-request-id"),
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


def delay_after_response(response: httpx.Response, state: RetryState, deadline: CallDeadline) -> float:
    """Seconds to wait before the next attempt after an error answer; raises the typed error when giving up (also
    when the wait would end past the call's deadline: sleeping only to fail later helps nobody)."""
    if should_retry_status(response.status_code):
        delay = state.next_delay(retry_after_seconds(response), limit_s=deadline.remaining())
        if delay is not None:
            return delay
    raise error_from_response(response, state.attempts)


def delay_after_error(error: httpx.HTTPError, state: RetryState, deadline: CallDeadline) -> float:
    """Seconds to wait after a transport failure; raises PoseConnectionError (or its timeout kind) when giving up."""
    if isinstance(error, httpx.TimeoutException) and deadline.remaining() <= 0:
        raise deadline.expired_error(state.attempts) from error
    if isinstance(error, RETRY_TRANSPORT_ERRORS):
        delay = state.next_delay(None, limit_s=deadline.remaining())
        if delay is not None:
            return delay
    kind = PoseTimeoutError if isinstance(error, httpx.TimeoutException) else PoseConnectionError
    raise kind(f"{deadline.url}: {type(error).__name__}: {error}", state.attempts) from error
