"""POST /v1/pose/video (NDJSON, one line per frame then a summary), /v1/pose/video/render (MP4) and the live
stream WS /v1/pose/stream.

Everything that can refuse the call - the upload, the options, the probe, the first frame - happens before the
answer starts, so refusals are ordinary JSON errors. After that, a failure ends the stream with one
`{"error": {...}}` line in place of the summary.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import Response, StreamingResponse

from posecore.errors import PoseError
from service.api.deps import ready_service, service_state
from service.api.pose import ERROR_RESPONSES, served_model
from service.responses import person_fields, timings_ms
from service.serving import PoseService
from service.state import ServiceState
from service.video.decode import VideoLimits, VideoReader
from service.video.options import query_parameters, read_options
from service.video.render import render_mp4
from service.video.run import FrameAnswer, VideoRun
from service.video.session import VideoSession
from service.video.stream import LiveStream, StreamLimits
from service.video.upload import RAW_VIDEO_TYPES, read_video_upload

router = APIRouter(tags=["video"])

VIDEO_ERRORS = {**ERROR_RESPONSES, 413: {**ERROR_RESPONSES[413], "description": "Body, video or frames too large, "
                                         "or too many frames"}}


def video_body() -> dict:
    binary = {"type": "string", "format": "binary"}
    return {"parameters": query_parameters(), "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["video"], "properties": {"video": binary}}},
        **{t: {"schema": binary} for t in RAW_VIDEO_TYPES},
    }}}


class _Cleanup(StreamingResponse):
    """A streamed answer that releases the call's resources however it ends (done, failed, client gone)."""

    def __init__(self, content: AsyncIterator[bytes], media_type: str, stack: AsyncExitStack) -> None:
        super().__init__(content, media_type=media_type)
        self._stack = stack

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stack.aclose()


def take_video_slot(state: ServiceState) -> Callable[[], None]:
    """A place among POSE_MAX_CONCURRENT_VIDEOS, or 429; returns its release."""
    if state.videos_active >= state.settings.max_concurrent_videos:
        raise PoseError("overloaded", f"{state.videos_active} videos and streams are being served (the limit, "
                        "POSE_MAX_CONCURRENT_VIDEOS); retry later", retry_after_s=2)
    state.videos_active += 1
    state.metrics.videos_active.set(state.videos_active)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            state.videos_active -= 1
            state.metrics.videos_active.set(state.videos_active)

    return release


async def open_run(request: Request, poser: PoseService, stack: AsyncExitStack) -> VideoRun:
    """Everything before the first line: slot, upload, options, probe, first frame. Raises PoseError."""
    state = service_state(request)
    settings = state.settings
    stack.callback(take_video_slot(state))
    deadline = time.monotonic() + settings.video_timeout_s
    upload = await read_video_upload(request, min(settings.max_video_bytes, settings.max_body_bytes))
    stack.push_async_callback(upload.close)
    options = read_options([request.query_params, upload.fields], settings.flip_test)
    limits = VideoLimits(settings.max_video_frames, settings.max_video_pixels, settings.max_video_decode_s)
    reader = await asyncio.to_thread(VideoReader, upload.file, limits)
    stack.push_async_callback(asyncio.to_thread, reader.close)
    run = VideoRun(VideoSession(poser, options), reader, deadline, settings.video_frames_in_flight, state.metrics,
                   options.fps)
    await run.start()
    return run


async def opened(request: Request, poser: PoseService, use: Callable[[VideoRun, AsyncExitStack], Awaitable[Response]],
                 ) -> Response:
    stack = AsyncExitStack()
    try:
        run = await open_run(request, poser, stack)
        return await use(run, stack)
    except BaseException:
        await stack.aclose()
        raise


def frame_json(answer: FrameAnswer, names: list[str]) -> dict:
    persons = [{"track_id": tracked.track_id, **person_fields(tracked.person, names)} for tracked in answer.persons]
    return {"frame": answer.frame.index, "time_s": answer.frame.time_s, "persons": persons,
            "timings_ms": timings_ms(answer.timings_s)}


@router.post("/v1/pose/video", responses={200: {"content": {"application/x-ndjson": {}}, "description":
                                                "One JSON line per frame, then one summary line"}, **VIDEO_ERRORS},
             openapi_extra=video_body(), response_class=Response, summary="Keypoints and track IDs, frame by frame")
async def pose_video(request: Request, poser: PoseService = Depends(ready_service)) -> Response:
    names = list(poser.codec.card.keypoints)
    model = served_model(request).model_dump()
    metrics = service_state(request).metrics

    async def stream(run: VideoRun, stack: AsyncExitStack) -> Response:
        async def lines() -> AsyncIterator[bytes]:
            try:
                async for answer in run.answers():
                    yield _line(frame_json(answer, names))
                yield _line({"summary": {**run.summary(), "model": model}})
            except PoseError as error:  # the answer has started: the error is its last line
                metrics.count_error(error.code)
                yield _line({"error": error.to_dict(), "frames": run.frames})

        return _Cleanup(lines(), "application/x-ndjson", stack)

    return await opened(request, poser, stream)


@router.post("/v1/pose/video/render", responses={200: {"content": {"video/mp4": {}}, "description":
                                                       "The video with skeletons and track IDs drawn"},
                                                 **VIDEO_ERRORS},
             openapi_extra=video_body(), response_class=Response, summary="The video with skeletons drawn (MP4)")
async def render_video(request: Request, poser: PoseService = Depends(ready_service)) -> Response:
    skeleton = poser.codec.card.skeleton

    async def render(run: VideoRun, stack: AsyncExitStack) -> Response:
        try:
            data = await render_mp4(run, skeleton)
        finally:
            await stack.aclose()
        headers = {"X-Model-Trained": str(poser.codec.card.trained).lower(), "X-Video-Frames": str(run.frames),
                   "X-Video-Tracks": str(run.session.tracks)}
        return Response(data, media_type="video/mp4", headers=headers)

    return await opened(request, poser, render)


def _line(body: dict) -> bytes:
    return json.dumps(body, allow_nan=False).encode() + b"\n"


@router.websocket("/v1/pose/stream")
async def pose_stream(websocket: WebSocket) -> None:
    """A live stream: binary JPEG/PNG frames in, one JSON message per frame out (service/video/stream.py).
    The API key is checked by the access-control middleware before this runs, as for every route."""
    state: ServiceState = websocket.app.state.service
    poser = state.poser
    if state.draining or poser is None or not state.ready:
        await websocket.close(code=1013, reason="not ready")  # 1013: try again later
        return
    try:
        options = read_options([websocket.query_params], state.settings.flip_test)
        session = VideoSession(poser, options)  # a decoding the card does not allow: refused before the handshake
        release = take_video_slot(state)
    except PoseError as error:
        await websocket.close(code=1013 if error.code == "overloaded" else 1008, reason=error.message[:120])
        return
    try:
        await websocket.accept()
        settings = state.settings
        limits = StreamLimits(settings.max_image_bytes, settings.max_image_pixels, settings.request_timeout_s,
                              settings.stream_queue_frames)
        stream = LiveStream(websocket, session, limits, state.metrics,
                            list(poser.codec.card.keypoints))
        await stream.serve()
    finally:
        release()
