"""Transport limits uvicorn's httptools protocol lacks: a header size limit and header/body progress timeouts.

uvicorn (httptools) accepts a header of any size, concatenating it piece by piece on the event loop (a 128 MB
header stalled /livez for 8 s), and never closes a connection that sends its headers or body slowly. This
protocol class keeps the fast httptools parser and adds, per connection:

- a head size limit: at most `max_header_bytes` for the request line plus headers; past it the parser is fed
  nothing more, the answer is 431 `request_header_too_large` and the connection is closed;
- a head timeout: a request's head must be complete within `header_timeout_s` of its first byte (of the
  connection's opening for the first request): 408 `request_timeout`, or a silent close when not one byte came;
- a body progress rule: every `body_timeout_s` window while a body is being received must bring at least
  max(1, `body_min_bytes_per_s` x `body_timeout_s`) bytes; windows in which we paused reading (flow control:
  the app is behind, not the client) do not count. Else 408 `request_timeout` if no answer has started, and the
  connection is closed. The request's own middleware records it (the scope's state says why it ended);
- idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive` (POSE_KEEP_ALIVE_TIMEOUT_S).

uvicorn's own log lines from this protocol ("Invalid HTTP request received." and the like) carry the client's
address. Refusals made before a request reaches the app (these, and uvicorn's 400 for a request the parser
refuses) are reported to `on_refusal(status, code)` for the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from posecore.errors import PoseError, error_body

log = logging.getLogger("service.http")

# Where the protocol tells the request's middleware that it ended the request (scope["state"][key] = code).
TRANSPORT_REFUSAL = "transport_refusal"


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    body_min_bytes_per_s: float = 1024.0

    @property
    def body_window_min_bytes(self) -> float:
        return max(1.0, self.body_min_bytes_per_s * self.body_timeout_s)


RefusalHook = Callable[[int, str], None]


class _ClientLog(logging.LoggerAdapter):
    """uvicorn's protocol logger with the client's address on every record (uvicorn reads `.level` too)."""

    def __init__(self, logger: logging.Logger, protocol: LimitedHttpToolsProtocol) -> None:
        super().__init__(logger, {})
        self.protocol = protocol

    @property
    def level(self) -> int:
        return self.logger.level

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {"client": self.protocol.client_address, **(kwargs.get("extra") or {})}
        return msg, kwargs


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: HttpLimits = HttpLimits()
    on_refusal: RefusalHook | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _ClientLog(logging.getLogger("uvicorn.error"), self)  # type: ignore[assignment]
        self._reading_head = True
        self._head_started = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_window_bytes = 0

    @property
    def client_address(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "-"

    # -- connection ---------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._reading_head:
            super().data_received(data)
            return
        room = self.limits.max_header_bytes - self._head_bytes
        if len(data) <= room or data.find(b"\r\n\r\n", 0, room) >= 0:  # the head ends within the limit: no copies
            self._head_bytes += len(data)
            super().data_received(data)
            return
        head, rest = data[:room], data[room:]
        self._head_bytes += len(head)
        if head:
            super().data_received(head)
        if self.transport.is_closing():
            return
        if self._reading_head and self._head_bytes >= self.limits.max_header_bytes and (rest or room <= 0):
            self._refuse_head(431, PoseError("request_header_too_large", "the request line and headers are over "
                                             f"the {self.limits.max_header_bytes}-byte limit"))
            return
        if rest:
            self.data_received(rest)  # the body, or the next pipelined request's head

    # -- parser callbacks ---------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel(self._head_timer)
        self._head_timer = None
        super().on_headers_complete()
        self._body_window_bytes = 0
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._check_body_progress)

    def on_body(self, body: bytes) -> None:
        self._body_window_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel(self._body_timer)
        self._body_timer = None
        self._reading_head, self._head_started, self._head_bytes = True, False, 0

    # -- timers -------------------------------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined head behind a running request: close after its answer
            return
        if not self._head_started:
            self.transport.close()  # nothing was sent: a silent close, as for an idle keep-alive connection
            return
        self._refuse_head(408, PoseError("request_timeout", "the request line and headers did not arrive within "
                                         f"{self.limits.header_timeout_s:g} s"))

    def _check_body_progress(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._reading_head:
            return
        if self._body_window_bytes >= self.limits.body_window_min_bytes or self.flow.read_paused:
            self._body_window_bytes = 0
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._check_body_progress)
            return
        cycle = self.cycle
        error = PoseError("request_timeout", f"the request body arrived slower than "
                          f"{self.limits.body_min_bytes_per_s:g} bytes/s over {self.limits.body_timeout_s:g} s")
        if cycle is not None and not cycle.response_started:
            request_id = cycle.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
            cycle.scope.setdefault("state", {})[TRANSPORT_REFUSAL] = error.code  # the middleware records it
            self._write_error(error, request_id)
        else:
            log.info("closed a connection whose request body stalled after its answer",
                     extra={"client": self.client_address, "error_code": error.code})
        if cycle is not None:  # the app's pending receive() now returns http.disconnect, and its send() nothing
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _cancel_timers(self) -> None:
        self._cancel(self._head_timer)
        self._cancel(self._body_timer)
        self._head_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    # -- answers before the app ---------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:  # uvicorn's answer to a request the parser refused
        if self.on_refusal is not None:
            self.on_refusal(400, "invalid_request")
        super().send_400_response(msg)

    def _refuse_head(self, status: int, error: PoseError) -> None:
        request_id = uuid.uuid4().hex
        log.warning("refused a request before its headers were complete: %s", error.message,
                    extra={"client": self.client_address, "status": status, "error_code": error.code,
                           "request_id": request_id})
        if self.on_refusal is not None:
            self.on_refusal(status, error.code)
        self._write_error(error, request_id)
        self._cancel_timers()
        self.transport.close()

    def _write_error(self, error: PoseError, request_id: str) -> None:
        status, headers, body = error_body(error, request_id)
        head = [STATUS_LINE[status]]
        for name, value in [*headers, (b"content-length", str(len(body)).encode()), (b"connection", b"close")]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))


def limited_protocol(limits: HttpLimits, on_refusal: RefusalHook | None = None) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`), configured with these limits."""
    return type("ConfiguredHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"limits": limits, "on_refusal": staticmethod(on_refusal) if on_refusal else None})
