"""WS /v1/pose/stream: a live stream of JPEG/PNG frames (binary messages) in, one JSON message per frame out,
with tracking and smoothing state per connection.

Back-pressure: frames wait in a queue of POSE_STREAM_QUEUE_FRAMES; when a new frame finds it full (the client
sends faster than it is served, or reads its answers slower), the OLDEST waiting frame is dropped and counted -
a live view wants the newest frame, and memory stays bounded whatever the client does. Every answer carries the
connection's `dropped` count; `frame` is the sequence number of the message it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from posecore.errors import PoseError
from posecore.imaging import decode_image
from service.metrics import Metrics
from service.responses import person_fields, timings_ms
from service.video.session import VideoSession


@dataclass(frozen=True)
class StreamLimits:
    max_image_bytes: int
    max_image_pixels: int
    frame_timeout_s: float
    queue_frames: int


@dataclass
class _Waiting:
    sequence: int
    arrived: float  # time.monotonic()
    data: bytes | None  # None: a text message, which is no frame


class LiveStream:
    def __init__(self, websocket: WebSocket, session: VideoSession, limits: StreamLimits, metrics: Metrics,
                 names: list[str]) -> None:
        self.websocket = websocket
        self.session = session
        self.limits = limits
        self.metrics = metrics
        self.names = names
        self.dropped = 0
        self.answered = 0
        self._queue: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._closed = False
        self._started: float | None = None

    async def serve(self) -> None:
        """Until the client disconnects (or an answer cannot be sent)."""
        worker = asyncio.ensure_future(self._answer_frames())
        try:
            await self._receive_frames()
        finally:
            self._closed = True
            self._arrived.set()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await worker

    async def _receive_frames(self) -> None:
        sequence = 0
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if len(self._queue) >= self.limits.queue_frames:
                self._queue.popleft()
                self.dropped += 1
                self.metrics.video_dropped_frames.inc()
            self._queue.append(_Waiting(sequence, time.monotonic(), message.get("bytes")))
            sequence += 1
            self._arrived.set()

    async def _answer_frames(self) -> None:
        while not self._closed:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            waiting = self._queue.popleft()
            answer = await self._answer(waiting)
            await self.websocket.send_text(json.dumps(answer, allow_nan=False))

    async def _answer(self, waiting: _Waiting) -> dict:
        if self._started is None:
            self._started = waiting.arrived
        time_s = waiting.arrived - self._started
        head = {"frame": waiting.sequence, "time_s": round(time_s, 6), "dropped": self.dropped}
        try:
            if waiting.data is None:
                raise PoseError("invalid_request", "send each frame as a binary message (a JPEG or PNG file)")
            deadline = waiting.arrived + self.limits.frame_timeout_s
            image = await asyncio.to_thread(decode_image, waiting.data, self.limits.max_image_bytes,
                                            self.limits.max_image_pixels)
            step = self.session.steps
            result = await self.session.estimate(image, step, deadline, patient=True)
        except PoseError as error:
            self.metrics.count_error(error.code)
            return {**head, "error": error.to_dict()}
        tracks_before = self.session.tracks
        tracked = self.session.follow(result, time_s)
        self.metrics.video_frames.labels(source="stream").inc()
        self.metrics.video_tracks.labels(source="stream").inc(self.session.tracks - tracks_before)
        width, height = result.image_wh
        persons = [{"track_id": t.track_id, **person_fields(t.person, self.names)} for t in tracked]
        return {**head, "image": {"width": width, "height": height}, "persons": persons,
                "timings_ms": timings_ms(result.timings_s)}
