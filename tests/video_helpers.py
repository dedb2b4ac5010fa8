"""Test videos made at test time with PyAV: small, a few frames, of synthetic scenes (moving figures drawn on
a photo-like background), in the containers and codecs the service must read."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import cv2
import numpy as np

from tests.helpers import photo

# (container format, codec, pixel format): the four the issue names
FORMATS = {
    "mp4-h264": ("mp4", "libx264", "yuv420p"),
    "mp4-mpeg4": ("mp4", "mpeg4", "yuv420p"),
    "webm-vp9": ("webm", "libvpx-vp9", "yuv420p"),
    "avi-mjpeg": ("avi", "mjpeg", "yuvj420p"),
}


def figure_frames(count: int, width: int = 160, height: int = 120, people: int = 1, seed: int = 0) -> list[np.ndarray]:
    """`count` RGB frames: `people` stick figures walking right across a fixed background."""
    background = photo(width, height, seed)
    frames = []
    for i in range(count):
        canvas = background.copy()
        for p in range(people):
            cx, cy = 20 + 35 * p + 3 * i, height // 2
            cv2.circle(canvas, (cx, cy - 30), 6, (250, 220, 200), -1)
            cv2.line(canvas, (cx, cy - 24), (cx, cy + 10), (30, 30, 200), 4)
            cv2.line(canvas, (cx, cy + 10), (cx - 8 + i % 5, cy + 35), (30, 30, 200), 3)
            cv2.line(canvas, (cx, cy + 10), (cx + 8 - i % 5, cy + 35), (30, 30, 200), 3)
            cv2.line(canvas, (cx - 12, cy - 10), (cx + 12, cy - 10), (30, 30, 200), 3)
        frames.append(canvas)
    return frames


def encode_video(frames: list[np.ndarray], kind: str = "mp4-h264", fps: int = 10) -> bytes:
    """The frames as a video file of FORMATS[kind], at `fps` (time base 1/fps where the muxer allows)."""
    container_format, codec, pix_fmt = FORMATS[kind]
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def decode_video(data: bytes) -> list[tuple[float, np.ndarray]]:
    """(time_s, RGB frame) of every frame, decoded here independently of the service's reader."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
