"""The bench's video phase: one and N concurrent clients each posting a video to /v1/pose/video over and over,
reading its NDJSON to the summary. Reported as frames/s (each frame is one crop on the default service without a
detector: the whole frame is one person), next to the image path's crops/s measured in the same rounds, so the
ratio shows what the video path (decoding, ordering, tracking, smoothing, streaming) costs over images.

The clip is made at bench time from a single-person photo of the workload: `frames` frames of a window panning
across it, H.264 in MP4 (what phones and cameras send).
"""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

import av
import httpx
import numpy as np

from posecore.imaging import decode_image
from service.bench.stats import Phase
from service.bench.workload import Photo


def make_clip(photo: Photo, frames: int = 30, fps: int = 30) -> bytes:
    """An MP4 (H.264) of a window panning a few pixels per frame across `photo` (even sizes for yuv420p)."""
    image = decode_image(photo.data, 50_000_000, 50_000_000)
    height, width = image.shape[:2]
    pan = min(frames, width // 4)
    w, h = (width - pan) // 2 * 2, height // 2 * 2
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            x = i * pan // frames
            window = np.ascontiguousarray(image[:h, x:x + w])
            for packet in stream.encode(av.VideoFrame.from_ndarray(window, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def post_video(client: httpx.Client, clip: bytes) -> tuple[int, int]:
    """(frames, persons) of one video call, read to its summary; raises on an error answer or line."""
    frames = persons = 0
    with client.stream("POST", "/v1/pose/video", content=clip, headers={"content-type": "video/mp4"},
                       params={"smooth": "true"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line:
                continue
            answer = json.loads(line)
            if "error" in answer:
                raise RuntimeError(f"video failed: {answer['error']}")
            if "frame" in answer:
                frames += 1
                persons += len(answer["persons"])
    return frames, persons


def video_load(url: str, name: str, clip: bytes, clients: int, seconds: float) -> tuple[Phase, int]:
    """(the phase: requests = videos, crops = persons posed; frames answered). Every client posts at least one
    video and finishes the one it has started, so the phase's time is until the last one ends."""
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"videos": 0, "frames": 0, "persons": 0, "errors": 0}
    stop_at = time.perf_counter() + seconds

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            first = True
            while first or time.perf_counter() < stop_at:  # at least one video each, however late it started
                first = False
                started = time.perf_counter()
                try:
                    frames, persons = post_video(client, clip)
                except (httpx.HTTPError, RuntimeError):
                    with lock:
                        totals["errors"] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    totals["videos"] += 1
                    totals["frames"] += frames
                    totals["persons"] += persons

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - began
    return Phase(name, totals["videos"], totals["persons"], elapsed, latencies, totals["errors"]), totals["frames"]


@dataclass
class VideoPhase:
    """Videos to the default service at `url` with 1 and N concurrent clients, pooled over `run_round` calls."""

    url: str
    clip: bytes
    clients: int
    seconds: float
    phases: dict[str, Phase] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)

    def keys(self) -> dict[str, tuple[str, int]]:
        return {"video_1c": ("(g) service, 1 client, videos", 1),
                "video": (f"(g) service, {self.clients} concurrent videos", self.clients)}

    def run_round(self) -> None:
        for key, (name, clients) in self.keys().items():
            phase, frames = video_load(self.url, name, self.clip, clients, self.seconds)
            self.phases[key] = self.phases[key].add(phase) if key in self.phases else phase
            self.frames[key] = self.frames.get(key, 0) + frames

    def frames_per_s(self) -> dict[str, float]:
        return {key: round(self.frames[key] / phase.seconds, 2) for key, phase in self.phases.items()}

    def describe(self, image_crops_per_s: float) -> str:
        rates = self.frames_per_s()
        return (f"Video phase (g): a {len(self.clip)}-byte H.264 clip, one person per frame; frames/s "
                f"{rates.get('video_1c')} with 1 client and {rates.get('video')} with {self.clients} concurrent "
                f"videos, vs the image path's {image_crops_per_s:.2f} crops/s ({self.clients} clients, "
                f"single-person) in the same rounds: ratio {rates.get('video', 0) / image_crops_per_s:.3f}.")
