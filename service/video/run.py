"""One video call: its frames decoded in order, estimated a few at a time through the shared batcher, then
tracked and smoothed in order. The first frame is estimated before anything is sent, so a refusal (overloaded,
a bad frame) is still a plain 4xx/429 answer; later frames wait for capacity instead (images come first).

Frames in flight are bounded (`in_flight`) per video: its crops join images' in the batcher, never flood it.
A frame whose boxes come from the previous frame's keypoints (detect_every > 1) waits for that frame.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from posecore.contract import Stage
from posecore.errors import PoseError
from service.metrics import Metrics
from service.responses import timings_ms
from service.serving import PoseResult
from service.video.decode import Frame, VideoReader
from service.video.session import TrackedPerson, VideoSession


@dataclass
class FrameAnswer:
    frame: Frame
    result: PoseResult
    persons: list[TrackedPerson]

    @property
    def timings_s(self) -> dict[Stage, float]:
        return {Stage.VIDEO: self.frame.decode_s, **self.result.timings_s}


class VideoRun:
    def __init__(self, session: VideoSession, reader: VideoReader, deadline: float, in_flight: int,
                 metrics: Metrics, fps: float | None = None) -> None:
        self.session = session
        self.reader = reader
        self.deadline = deadline
        self.in_flight = in_flight
        self.metrics = metrics
        self.period = 1.0 / fps if fps else None
        self.started = time.perf_counter()
        self.frames = 0
        self.totals_s: dict[Stage, float] = {}
        self._frames: Iterator[Frame] = iter(reader)
        self._next_time: float | None = None
        self._first: tuple[Frame, PoseResult] | None = None

    async def start(self) -> None:
        """Decode and estimate the first frame (raises PoseError: the call is refused whole)."""
        frame = await self._next_frame()
        assert frame is not None  # the reader refuses a video without a decodable frame
        result = await self.session.estimate(frame.image, 0, self.deadline, patient=False)
        self._first = (frame, result)

    async def answers(self) -> AsyncIterator[FrameAnswer]:
        """Every sampled frame's answer, in order. Raises PoseError for a failure after the first frame."""
        assert self._first is not None, "start() first"
        pending: deque[tuple[Frame, asyncio.Future[PoseResult]]] = deque()
        first_frame, first_result = self._first
        done: asyncio.Future[PoseResult] = asyncio.get_running_loop().create_future()
        done.set_result(first_result)
        pending.append((first_frame, done))
        step = 1
        try:
            while True:
                try:
                    frame = await self._next_frame()
                except PoseError:  # a frame that does not decode: the frames before it are answered first
                    while pending:
                        yield await self._answer(*pending.popleft())
                    raise
                if frame is None:
                    break
                while pending and (len(pending) >= self.in_flight or self.session.carries_boxes(step)):
                    yield await self._answer(*pending.popleft())
                task = asyncio.ensure_future(self.session.estimate(frame.image, step, self.deadline, patient=True))
                pending.append((frame, task))
                step += 1
            while pending:
                yield await self._answer(*pending.popleft())
        finally:
            for _, future in pending:
                future.cancel()

    def summary(self) -> dict:
        elapsed = time.perf_counter() - self.started
        info = self.reader.info
        return {
            "frames": self.frames, "video_frames": info.frames, "tracks": self.session.tracks,
            "width": info.width, "height": info.height, "codec": info.codec, "container": info.container,
            "fps": info.fps, "smooth": self.session.smoother is not None,
            "detect_every": self.session.options.detect_every, "decode": self.session.decoding,
            "elapsed_s": round(elapsed, 4), "frames_per_s": round(self.frames / elapsed, 3) if elapsed else None,
            "timings_ms": timings_ms(self.totals_s),
        }

    async def _answer(self, frame: Frame, future: asyncio.Future[PoseResult]) -> FrameAnswer:
        result = await future
        tracks_before = self.session.tracks
        answer = FrameAnswer(frame, result, self.session.follow(result, frame.time_s))
        self.frames += 1
        for stage, seconds in answer.timings_s.items():
            self.totals_s[stage] = self.totals_s.get(stage, 0.0) + seconds
        self.metrics.stage_latency.labels(stage=Stage.VIDEO).observe(frame.decode_s)  # the rest: estimate_frame
        self.metrics.video_frames.labels(source="file").inc()
        self.metrics.video_tracks.labels(source="file").inc(self.session.tracks - tracks_before)
        return answer

    async def _next_frame(self) -> Frame | None:
        """The next frame the sampling keeps, decoded in a worker thread under the call's deadline."""
        while True:
            remaining = self.deadline - time.monotonic()
            try:
                frame = await asyncio.wait_for(asyncio.to_thread(next, self._frames, None), max(0.0, remaining))
            except asyncio.TimeoutError:
                raise PoseError("deadline_exceeded", "the video's deadline passed while it was being decoded",
                                retry_after_s=1) from None
            if frame is None or self._keep(frame.time_s):
                return frame

    def _keep(self, time_s: float) -> bool:
        if self.period is None:
            return True
        if self._next_time is not None and time_s < self._next_time - 1e-9:
            return False
        self._next_time = max((self._next_time or time_s) + self.period, time_s + 1e-9)
        return True
