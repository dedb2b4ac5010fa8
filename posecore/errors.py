"""One error type, one table from stable error code to HTTP status, one handler.

Every refusal the service makes is a `PoseError`; the JSON body is
`{"error": {"code": "...", "message": "..."}, "request_id": "..."}`.
"""

from __future__ import annotations

import json

# code -> HTTP status. Codes are part of the API contract: add, never rename.
ERROR_STATUS: dict[str, int] = {
    # the caller's request
    "invalid_request": 400,
    "invalid_json": 400,
    "invalid_boxes": 422,
    "too_many_boxes": 422,
    "too_many_items": 422,
    "unsupported_media_type": 415,
    "payload_too_large": 413,
    "json_too_complex": 413,  # a JSON body with more values or deeper nesting than any valid request
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,  # headers or body too slow (answered by the HTTP protocol, service/http_limits.py)
    "request_header_too_large": 431,
    # the image
    "empty_image": 400,
    "corrupt_image": 400,
    "unsupported_image_format": 415,
    "animated_image_unsupported": 415,
    "image_too_large": 413,
    "image_too_many_pixels": 413,
    "image_too_complex": 422,  # decodable, but far more decoding work than its pixels suggest (scans, chunks)
    # the video (POST /v1/pose/video, /v1/pose/video/render)
    "invalid_video": 400,  # no container, no video stream, or undecodable frames
    "unsupported_video_format": 415,
    "video_too_large": 413,  # POSE_MAX_VIDEO_BYTES
    "video_too_long": 413,  # POSE_MAX_VIDEO_FRAMES: refused whole, never cut
    "video_too_many_pixels": 413,  # POSE_MAX_VIDEO_PIXELS, per frame
    "video_too_complex": 422,  # decoding ran over POSE_MAX_VIDEO_DECODE_S
    # load and time
    "overloaded": 429,
    "not_ready": 503,
    "shutting_down": 503,
    "deadline_exceeded": 504,
    # the caller left before its answer: nothing is sent; 499 keeps it apart from our faults in the metrics
    "client_disconnected": 499,
    # ours
    "inference_failed": 500,
    "internal_error": 500,
}

# code -> the Retry-After (seconds) its refusals carry unless they say otherwise: short for load shedding and a
# drain (another replica answers), longer while the model loads.
RETRY_AFTER_S: dict[str, float] = {"overloaded": 1, "not_ready": 5, "shutting_down": 1, "deadline_exceeded": 1}
RETRY_AFTER_CODES = frozenset(RETRY_AFTER_S)


class PoseError(Exception):
    """A refusal with a stable machine-readable code; the HTTP status comes from ERROR_STATUS."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = RETRY_AFTER_S.get(code) if retry_after_s is None else retry_after_s

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}



def error_body(error: PoseError, request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, ASGI headers and JSON body of the answer to `error` (middlewares and exception handlers)."""
    body = json.dumps({"error": error.to_dict(), "request_id": request_id}).encode()
    headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
    if error.code in RETRY_AFTER_CODES:
        headers.append((b"retry-after", retry_after_header(error.retry_after_s or RETRY_AFTER_S[error.code]).encode()))
    return ERROR_STATUS[error.code], headers, body


def retry_after_header(seconds: float) -> str:
    """Retry-After's value: whole seconds, at least 1."""
    return str(max(1, round(seconds)))


class ModelLoadError(RuntimeError):
    """A model file (or its card) is missing or unusable; start-up stops with this one-line message."""
