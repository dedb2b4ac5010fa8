"""The documented error answers of the routes, for OpenAPI: one builder for both front doors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from posecore.errors import ERROR_STATUS, RETRY_AFTER_CODES

RETRY_AFTER_HEADER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                       "schema": {"type": "integer", "minimum": 1}}}
# the statuses whose refusals carry Retry-After (overloaded, not ready / shutting down, deadline exceeded)
RETRY_AFTER_STATUSES = {ERROR_STATUS[code] for code in RETRY_AFTER_CODES}


def error_responses(model: type[BaseModel], texts: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with its body model and description, Retry-After where it applies."""
    return {status: {"model": model, "description": text,
                     **({"headers": RETRY_AFTER_HEADER} if status in RETRY_AFTER_STATUSES else {})}
            for status, text in texts.items()}
