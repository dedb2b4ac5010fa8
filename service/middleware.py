"""Pure-ASGI middlewares (not BaseHTTPMiddleware, which would put itself on the hot path's bill).

The stack, outermost first:

1. `RequestContextMiddleware`: the request ID (in the response headers and, through a contextvar, in every log
   line), the streamed body-size cap, request metrics and the access log, HEAD as GET without the body, and
   client hang-ups counted as 499. Everything answers through it.
2. CORS (only when POSE_CORS_ORIGINS is set): preflights are answered here, and every answer below it,
   refusals included, carries the CORS headers a browser needs to read it.
3. `AccessControlMiddleware`: the API-key check and the declared (Content-Length) body-size limit.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid

from starlette.requests import ClientDisconnect

from posecore.errors import ERROR_STATUS, PoseError
from service.http_limits import TRANSPORT_REFUSAL
from service.logs import request_id_var
from service.memory import HANDLED_BYTES, release_after
from service.metrics import Metrics
from service.refusals import refusal_answer

log = logging.getLogger("service.access")

PROBE_PATHS = ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")  # v2: KServe-style probes
OPEN_PATHS = ("/", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc")


class _Exchange:
    """What one request's wrappers saw: the answer's status, whether the body was read to its end, whether the
    client left before that."""

    def __init__(self) -> None:
        self.status = 500
        self.body_complete = False
        self.client_left = False
        self.body_bytes = 0


class RequestContextMiddleware:
    """Also: HEAD is served as GET without the body (probes and uptime checkers use HEAD; answering it here keeps
    the OpenAPI schema to the GET operations), and a client that hangs up before its body is complete is counted
    as status 499 `client_disconnected` with one log line, not as a 500 with tracebacks (nothing can be sent)."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        request_id = _safe_request_id(headers.get(b"x-request-id")) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        exchange = _Exchange()
        head = scope["method"] == "HEAD"
        app_scope = {**scope, "method": "GET"} if head else scope  # the same state dict: the protocol writes there

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                message.setdefault("headers", [])
                if not any(k.lower() == b"x-request-id" for k, _ in message["headers"]):
                    message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}  # the GET's headers (Content-Length included), no body
            await send(message)

        try:
            await self.app(app_scope, self._watched(receive, exchange), send_with_id)
        except ClientDisconnect:  # raised by Starlette when receive() says http.disconnect mid-body
            exchange.client_left = True
        finally:
            self._record(app_scope, exchange, time.perf_counter() - started)
            request_id_var.reset(token)
            # a large body (or one that inflated large) leaves freed pages in malloc's arenas
            release_after(max(exchange.body_bytes, app_scope["state"].get(HANDLED_BYTES, 0)))

    def _watched(self, receive, exchange: _Exchange):
        """Counts body bytes as they arrive (a chunked body without Content-Length is capped too) and notes a
        client that leaves before its body is complete."""
        seen = 0
        limit = self.max_body_bytes

        async def receive_watched():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                exchange.body_bytes = seen
                if seen > limit:
                    raise PoseError("payload_too_large", f"request body over the {limit}-byte limit")
                if not message.get("more_body", False):
                    exchange.body_complete = True
            elif message["type"] == "http.disconnect" and not exchange.body_complete:
                exchange.client_left = True
            return message

        return receive_watched

    def _record(self, scope, exchange: _Exchange, elapsed: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"  # templates only: bounded label values
        status, code = exchange.status, None
        # the HTTP protocol ended the request (a stalled body: it answered 408 itself), or the client left: nothing
        # the app did afterwards reached anyone, and it is no fault of ours
        ended_by = scope.get("state", {}).get(TRANSPORT_REFUSAL)
        if ended_by is not None:
            status, code = ERROR_STATUS[ended_by], ended_by
        elif exchange.client_left:
            status, code = ERROR_STATUS["client_disconnected"], "client_disconnected"
        if code is not None:
            self.metrics.count_error(code)
        self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.metrics.request_latency.labels(endpoint=endpoint).observe(elapsed)
        if scope["path"] not in PROBE_PATHS or code is not None:
            extra = {"method": scope["method"], "path": scope["path"], "status": status,
                     "duration_ms": round(elapsed * 1000, 2)}
            if code is not None:
                client = scope.get("client")
                extra |= {"error_code": code, "client": f"{client[0]}:{client[1]}" if client else "-"}
            log.info("request" if code is None else f"request ended before its body was complete: {code}",
                     extra=extra)


class AccessControlMiddleware:
    """Refuses, before the app reads a byte of the body: a missing or wrong API key (401 unauthorized) and a
    declared body over the limit (413 payload_too_large). The probes stay open unless `auth_probes`."""

    def __init__(self, app, metrics: Metrics, api_keys: list[str], auth_probes: bool, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.api_keys = [k.encode() for k in api_keys]
        self.auth_probes = auth_probes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # a live stream: the same keys; refused before the handshake completes
            if self.api_keys and not self._key_ok(dict(scope["headers"])):
                self.metrics.count_error("unauthorized")
                await send({"type": "websocket.close", "code": 1008, "reason": "a valid API key is required"})
                return None
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope, dict(scope["headers"]))
        if refusal is None:
            return await self.app(scope, receive, send)
        request_id = scope.get("state", {}).get("request_id", "-")
        status, headers, body = refusal_answer(self.metrics, scope["path"], refusal, request_id)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope, headers: dict) -> PoseError | None:
        path = scope["path"]
        open_path = path in OPEN_PATHS or (path in PROBE_PATHS and not self.auth_probes)
        if self.api_keys and not open_path and not self._key_ok(headers):
            return PoseError("unauthorized", "a valid API key is required (header X-API-Key or "
                             "Authorization: Bearer)")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return PoseError("invalid_request", "Content-Length is not a number")
            if int(length) > self.max_body_bytes:
                return PoseError("payload_too_large", f"request body over the {self.max_body_bytes}-byte limit")
        return None

    def _key_ok(self, headers: dict) -> bool:
        offered = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if offered is None and auth[:7].lower() == b"bearer ":
            offered = auth[7:].strip()
        if not offered:
            return False
        # compare against every key without an early exit, so timing says nothing about which matched
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(offered, key)
        return matched


def _safe_request_id(value: bytes | None) -> str | None:
    """Accept a caller's X-Request-ID only if it is short and printable (it goes into logs and headers)."""
    if not value or len(value) > 128:
        return None
    text = value.decode("ascii", "ignore")
    return text if text.isprintable() and all(c.isalnum() or c in "-_.:" for c in text) else None
