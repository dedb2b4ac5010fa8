"""Errors under /v2 answer in the protocol's form, `{"error": "<code>: <message>"}`, with the same status codes
and Retry-After as /v1 (posecore/errors.py's table); the request ID is in the X-Request-ID header."""

from __future__ import annotations

import json

from posecore.errors import PoseError, error_body

PREFIX = "/v2"


def is_protocol_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def protocol_error_body(error: PoseError, request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, ASGI headers and body, as posecore.errors.error_body, in the protocol's form."""
    status, headers, _ = error_body(error, request_id)
    body = json.dumps({"error": f"{error.code}: {error.message}"}).encode()
    return status, headers, body
