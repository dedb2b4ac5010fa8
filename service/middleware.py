"""Pure-ASGI middlewares (not BaseHTTPMiddleware, which would put itself on the hot path's bill).

The stack, outermost first:

1. `RequestContextMiddleware`: the request ID (in the response headers and, through a contextvar, in every log
   line), the streamed body-size cap, request metrics and the access log. Everything answers through it.
2. CORS (only when POSE_CORS_ORIGINS is set): preflights are answered here, and every answer below it,
   refusals included, carries the CORS headers a browser needs to read it.
3. `AccessControlMiddleware`: the API-key check and the declared (Content-Length) body-size limit.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid

from service.errors import PoseError, error_body
from service.logs import request_id_var
from service.metrics import Metrics

log = logging.getLogger("service.access")

PROBE_PATHS = ("/livez", "/readyz", "/metrics")
OPEN_PATHS = ("/", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc")


class RequestContextMiddleware:
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
        status_holder = {"status": 500}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                if not any(k.lower() == b"x-request-id" for k, _ in message["headers"]):
                    message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, self._limited(receive), send_with_id)
        finally:
            self._record(scope, status_holder["status"], time.perf_counter() - started)
            request_id_var.reset(token)

    def _limited(self, receive):
        """Counts body bytes as they arrive: a chunked body without Content-Length is capped too."""
        seen = 0
        limit = self.max_body_bytes

        async def receive_limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PoseError("payload_too_large", f"request body over the {limit}-byte limit")
            return message

        return receive_limited

    def _record(self, scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"  # templates only: bounded label values
        self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.metrics.request_latency.labels(endpoint=endpoint).observe(elapsed)
        if scope["path"] not in PROBE_PATHS:
            log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                       "duration_ms": round(elapsed * 1000, 2)})


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
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope, dict(scope["headers"]))
        if refusal is None:
            return await self.app(scope, receive, send)
        status, headers, body = error_body(refusal, scope.get("state", {}).get("request_id", "-"))
        self.metrics.errors.labels(code=refusal.code).inc()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope, headers: dict) -> PoseError | None:
        path = scope["path"]
        if self.api_keys and not (path in OPEN_PATHS or (path in PROBE_PATHS and not self.auth_probes)):
            if not self._key_ok(headers):
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
