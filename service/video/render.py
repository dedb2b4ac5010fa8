"""/v1/pose/video/render: the video's frames with skeletons, boxes and track IDs drawn, encoded as MP4 (H.264
where this FFmpeg has libx264, else MPEG-4 Part 2), at the source's frame rate (or the sampled one)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from typing import IO, Any

import av
import cv2
import numpy as np

from service.render import BOX_COLOR, draw_poses
from service.video.run import FrameAnswer, VideoRun

TEXT_COLOR = (255, 255, 255)


def draw_tracked(answer: FrameAnswer, skeleton: Sequence[tuple[int, int]]) -> np.ndarray:
    """The frame with each person's skeleton and box, and their track ID above the box."""
    canvas = draw_poses(answer.frame.image, [t.person for t in answer.persons], skeleton)
    scale = max(0.4, max(canvas.shape[:2]) / 800)
    for tracked in answer.persons:
        x, y = round(float(tracked.person.box[0])), round(float(tracked.person.box[1]))
        org = (max(0, x), max(12, y - 4))
        cv2.putText(canvas, f"#{tracked.track_id}", org, cv2.FONT_HERSHEY_SIMPLEX, scale, BOX_COLOR, 3, cv2.LINE_AA)
        cv2.putText(canvas, f"#{tracked.track_id}", org, cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR, 1, cv2.LINE_AA)
    return canvas


class Mp4Writer:
    def __init__(self, out: IO[bytes], fps: float) -> None:
        self.container: Any = av.open(out, mode="w", format="mp4")
        self.fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self.stream: Any = None

    def write(self, rgb: np.ndarray) -> None:
        height, width = rgb.shape[:2]
        even = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")  # yuv420p: even sizes
        if self.stream is None:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=self.fps)
            self.stream.width, self.stream.height = even.shape[1], even.shape[0]
            self.stream.pix_fmt = "yuv420p"
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(even, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def _draw_and_write(writer: Mp4Writer, answer: FrameAnswer, skeleton: Sequence[tuple[int, int]]) -> None:
    writer.write(draw_tracked(answer, skeleton))


async def render_mp4(run: VideoRun, skeleton: Sequence[tuple[int, int]]) -> bytes:
    fps = 1.0 / run.period if run.period else (run.reader.info.fps or 25.0)
    with tempfile.TemporaryFile() as out:
        writer = Mp4Writer(out, fps)
        try:
            async for answer in run.answers():
                await asyncio.to_thread(_draw_and_write, writer, answer, skeleton)
        finally:
            await asyncio.to_thread(writer.close)
        out.seek(0)
        return out.read()
