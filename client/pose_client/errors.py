"""Typed exceptions. An answer the service refused carries its stable error code, the HTTP status and the request
ID (quote it when asking the service's operators: their log lines carry it)."""

from __future__ import annotations

import json
import math
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

import httpx


class PoseClientError(Exception):
    """Base class of everything this client raises."""


class PoseConnectionError(PoseClientError):
    """The service could not be reached (or dropped the connection) on every attempt."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class PoseTimeoutError(PoseConnectionError):
    """No answer within the client's timeout (not retried: the service may still be working on it)."""


class InvalidResponseError(PoseClientError):
    """The service answered with success, but not with what the call expects: not JSON (a proxy's HTML page), not
    an object, a missing or wrong-typed field, or a body that is not an image. Not retried: the same server would
    answer the same way."""

    def __init__(self, message: str, status: int, request_id: str | None = None, attempts: int = 1) -> None:
        super().__init__(f"malformed {status} answer: {message}" + (f" (request {request_id})" if request_id else ""))
        self.status = status
        self.request_id = request_id
        self.attempts = attempts


class PoseAPIError(PoseClientError):
    """The service answered with an error: `code` is its stable machine-readable code (e.g. `corrupt_image`)."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None,
                 retry_after_s: float | None = None, attempts: int = 1) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        self.attempts = attempts


class InvalidRequestError(PoseAPIError):
    """4xx: the request, the image or the boxes (400, 404, 405, 413, 415, 422)."""


class UnauthorizedError(PoseAPIError):
    """401: missing or wrong API key."""


class OverloadedError(PoseAPIError):
    """429: the service shed the request; it was retried as long as the retry policy allowed."""


class UnavailableError(PoseAPIError):
    """503: not ready yet or shutting down."""


class DeadlineExceededError(PoseAPIError):
    """504: the request's crops did not get through the queue in time."""


class ServerError(PoseAPIError):
    """5xx: the service's own fault (inference_failed, internal_error) or a proxy's."""


_BY_STATUS: dict[int, type[PoseAPIError]] = {401: UnauthorizedError, 429: OverloadedError, 503: UnavailableError,
                                             504: DeadlineExceededError}


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delay-seconds (what the service sends) or an HTTP date (what a proxy or a
    CDN may send; a date already past is 0). None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": RFC 5322's "UTC, origin unknown"
            when = when.replace(tzinfo=timezone.utc)
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if seconds >= 0 and not math.isnan(seconds) else None


def error_from_response(response: httpx.Response, attempts: int = 1) -> PoseAPIError:
    """The typed exception for an error answer; tolerant of bodies that are not the service's (a proxy's 502)."""
    status = response.status_code
    code, message = f"http_{status}", response.reason_phrase or "error"
    request_id = response.headers.get("x-request-id")
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # the /v1 form {"error": {"code", "message"}, "request_id"}
            code = str(error.get("code", code))
            message = str(error.get("message", message))
        elif isinstance(error, str):  # the Open Inference Protocol form {"error": "..."}
            message = error
        request_id = body.get("request_id") or request_id
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else InvalidRequestError)
    return kind(status, code, message, request_id, retry_after_seconds(response), attempts)
