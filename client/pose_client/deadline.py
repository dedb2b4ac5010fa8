"""One call's total deadline: `timeout` seconds from the call's start to the last byte of its answer, every
attempt and every wait between attempts included. httpx's own timeouts bound each network read, so a server
that drips one byte a second would never trip them. The async client cancels an attempt at the deadline; the sync
one checks it after every read of the body, and bounds each read of the status line and headers by what is left
(httpx offers no hook between those reads: a server dripping its headers is bounded per read only)."""

from __future__ import annotations

import time

import httpx

from pose_client.errors import PoseTimeoutError


class CallDeadline:
    def __init__(self, timeout: float, url: str) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.url = url
        self.ends = time.monotonic() + timeout

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def expired_error(self, attempts: int) -> PoseTimeoutError:
        return PoseTimeoutError(f"{self.url}: no complete answer within the call's timeout of {self.timeout:g} s",
                                attempts)

    def left(self, attempts: int) -> float:
        """Seconds left for the next attempt; raises PoseTimeoutError when none are."""
        remaining = self.remaining()
        if remaining <= 0:
            raise self.expired_error(attempts)
        return remaining

    def check(self, attempts: int) -> None:
        self.left(attempts)


def rebuilt(streamed: httpx.Response, raw: bytes) -> httpx.Response:
    """A complete response from a streamed one's status, headers and raw (still encoded) body."""
    return httpx.Response(streamed.status_code, headers=streamed.headers, content=raw, request=streamed.request,
                          extensions={key: streamed.extensions[key] for key in ("http_version", "reason_phrase")
                                      if key in streamed.extensions})
