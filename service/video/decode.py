"""Video files in, RGB frames with their presentation times out (PyAV, which bundles FFmpeg).

`open_video` probes before any frame is promised: the container must open, hold a video stream whose codec
this FFmpeg decodes, have frames of at most `max_pixels`, and hold at most `max_frames` frames - counted by
demuxing every packet (cheap: nothing is decoded), so a video over the limit is refused, never cut short. The
first frame is decoded too, so a file whose codec data is broken is refused before the answer starts.

Times come from the container: a frame's `time_s` is its pts x the stream's time_base (exact, unlike OpenCV's
CAP_PROP_POS_MSEC). All the decoding, the probe included, counts against one wall-clock budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import av
import numpy as np

from posecore.errors import PoseError


@dataclass(frozen=True)
class VideoLimits:
    max_frames: int
    max_pixels: int  # per frame
    max_decode_s: float  # the whole file's decoding, probe included


@dataclass(frozen=True)
class Frame:
    index: int  # position in the video's decoded frames (before any sampling)
    time_s: float  # presentation time: pts x time_base
    image: np.ndarray  # RGB uint8 (H, W, 3)
    decode_s: float


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    frames: int  # counted from the packets
    fps: float | None  # the stream's average rate, when it states one


class VideoReader:
    """One opened, probed video. Iterating yields its frames; `close` (or the `with` block) frees FFmpeg's state."""

    def __init__(self, source: IO[bytes], limits: VideoLimits) -> None:
        self.limits = limits
        self.decode_s = 0.0
        self._source = source
        self._container: Any = None
        self._lock = threading.Lock()  # a frame being decoded in a worker thread is finished before closing
        started = time.perf_counter()
        try:
            self.info = self._probe()
            self._spend(time.perf_counter() - started)
            self._frames = self._decode()
            self._first: Frame | None = next(self._frames, None)
        except BaseException:
            self.close()
            raise
        if self._first is None:
            raise PoseError("invalid_video", "the video holds no decodable frame")

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._container is not None:
                self._container.close()
                self._container = None

    def __iter__(self) -> Iterator[Frame]:
        first, self._first = self._first, None
        if first is not None:
            yield first
        yield from self._frames

    def _open(self) -> Any:
        self._source.seek(0)
        try:
            return av.open(self._source, mode="r")
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise PoseError("invalid_video", f"not a readable video container: {_reason(exc)}") from None

    def _video_stream(self, container: Any) -> Any:
        if not container.streams.video:
            raise PoseError("invalid_video", "the file holds no video stream")
        return container.streams.video[0]

    def _probe(self) -> VideoInfo:
        container = self._open()
        try:
            stream = self._video_stream(container)
            codec = stream.codec_context
            if codec is None or not codec.name:
                raise PoseError("unsupported_video_format", "the video's codec is not one this service decodes")
            self._check_pixels(codec.width, codec.height)
            frames = 0
            try:
                for packet in container.demux(stream):
                    if packet.size:  # the demuxer's final flush packet is empty
                        frames += 1
                        if frames > self.limits.max_frames:
                            raise PoseError("video_too_long", f"the video has more than {self.limits.max_frames} "
                                            "frames (POSE_MAX_VIDEO_FRAMES); cut it, or sample it before sending")
            except av.FFmpegError as exc:
                raise PoseError("invalid_video", f"the video's packets could not be read: {_reason(exc)}") from None
            rate = stream.average_rate
            return VideoInfo(container.format.name, codec.name, codec.width, codec.height, frames,
                             float(rate) if rate else None)
        finally:
            container.close()

    def _decode(self) -> Iterator[Frame]:
        self._container = container = self._open()
        stream = self._video_stream(container)
        rate = stream.average_rate
        decoded = container.decode(stream)
        index = 0
        try:
            while True:
                started = time.perf_counter()
                with self._lock:
                    if self._container is None:  # closed under us: the call is over
                        return
                    try:
                        frame = next(decoded, None)
                    except av.FFmpegError as exc:
                        raise PoseError("invalid_video", f"frame {index} could not be decoded: "
                                        f"{_reason(exc)}") from None
                    if frame is None:
                        return
                    self._check_pixels(frame.width, frame.height)
                    image = frame.to_ndarray(format="rgb24")
                spent = time.perf_counter() - started
                self._spend(spent)
                if index >= self.limits.max_frames:
                    raise PoseError("video_too_long", f"the video decoded to more than {self.limits.max_frames} "
                                    "frames (POSE_MAX_VIDEO_FRAMES)")
                time_s = float(frame.pts * stream.time_base) if frame.pts is not None and stream.time_base \
                    else index / float(rate or 1)
                yield Frame(index, time_s, image, spent)
                index += 1
        finally:
            self.close()

    def _check_pixels(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise PoseError("invalid_video", "the video states no frame size")
        if width * height > self.limits.max_pixels:
            raise PoseError("video_too_many_pixels", f"{width}x{height} frames are over the "
                            f"{self.limits.max_pixels}-pixel limit (POSE_MAX_VIDEO_PIXELS)")

    def _spend(self, seconds: float) -> None:
        self.decode_s += seconds
        if self.decode_s > self.limits.max_decode_s:
            raise PoseError("video_too_complex", f"decoding took over the {self.limits.max_decode_s:g} s budget "
                            "(POSE_MAX_VIDEO_DECODE_S)")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)  # FFmpeg errors: the reason without the errno and file
    return str(text).strip()[:200] or type(exc).__name__
