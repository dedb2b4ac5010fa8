"""A video upload, streamed to an anonymous temporary file bounded by POSE_MAX_VIDEO_BYTES.

The file is opened with `tempfile.TemporaryFile`: on Linux it has no name on disk at all (O_TMPFILE, or
unlinked at once), so it is gone when closed - or when the process dies - whatever happened to the request.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from posecore.errors import PoseError

RAW_VIDEO_TYPES = ("video/mp4", "video/webm", "video/x-msvideo", "video/avi", "video/quicktime", "video/x-matroska",
                   "application/octet-stream")
FORM_SLACK_BYTES = 64 * 1024  # room for the multipart framing and the option fields around the file


@dataclass
class VideoUpload:
    file: IO[bytes]
    fields: Mapping[str, Any] = field(default_factory=dict)
    _form: Any = None

    async def close(self) -> None:
        self.file.close()
        if self._form is not None:
            await self._form.close()


def _too_large(limit: int) -> PoseError:
    return PoseError("video_too_large", f"the video is over the {limit}-byte limit (POSE_MAX_VIDEO_BYTES)")


async def read_video_upload(request: Request, max_bytes: int) -> VideoUpload:
    """A multipart form with a 'video' file, or the video itself as the body (Content-Type video/*)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length", "")
    if kind == "multipart/form-data":
        if length.isdigit() and int(length) > max_bytes + FORM_SLACK_BYTES:
            raise _too_large(max_bytes)
        return await _from_form(request, max_bytes)
    if kind in RAW_VIDEO_TYPES or kind.startswith("video/"):
        if length.isdigit() and int(length) > max_bytes:
            raise _too_large(max_bytes)
        return await _from_body(request, max_bytes)
    raise PoseError("unsupported_media_type", "send multipart/form-data with a 'video' file, or the video itself "
                    "with a Content-Type video/* (e.g. video/mp4, video/webm, video/x-msvideo)")


async def _from_body(request: Request, max_bytes: int) -> VideoUpload:
    file = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
    try:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            file.write(chunk)
        if size == 0:
            raise PoseError("invalid_video", "the body is empty: send the video file")
        file.flush()
        return VideoUpload(file)
    except BaseException:
        file.close()
        raise


async def _from_form(request: Request, max_bytes: int) -> VideoUpload:
    seen = 0
    receive = request.receive

    async def bounded_receive() -> Any:  # the form parser spools the file to disk; stop it at the limit
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > max_bytes + FORM_SLACK_BYTES:
            raise _too_large(max_bytes)
        return message

    form = await Request(request.scope, bounded_receive).form(max_files=1, max_fields=16)
    try:
        video = form.get("video")
        if not isinstance(video, UploadFile):
            raise PoseError("invalid_request", "multipart field 'video' (a file) is required")
        if video.size is not None and video.size > max_bytes:
            raise _too_large(max_bytes)
        if not video.size:
            raise PoseError("invalid_video", "the 'video' file is empty")
        return VideoUpload(video.file, {k: v for k, v in form.items() if k != "video"}, form)
    except BaseException:
        await form.close()
        raise
