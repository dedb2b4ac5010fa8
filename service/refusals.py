"""Every refusal the service answers, in one place: counted once (pose_errors_total by code) and answered in the
form of the path's API, the /v1 body (posecore.errors.error_body) or, under /v2, the Open Inference Protocol's
(service/oip/errors.py). The exception handlers and the access-control middleware both answer through here."""

from __future__ import annotations

from posecore.errors import PoseError, error_body
from service.metrics import Metrics
from service.oip.errors import is_protocol_path, protocol_error_body

AsgiAnswer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, ASGI headers, body


def refusal_answer(metrics: Metrics, path: str, error: PoseError, request_id: str) -> AsgiAnswer:
    """Count the refusal, then its status, headers and body for a request to `path`."""
    metrics.count_error(error.code)
    return (protocol_error_body if is_protocol_path(path) else error_body)(error, request_id)
