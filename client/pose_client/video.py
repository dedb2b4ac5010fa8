"""Video calls: POST /v1/pose/video read line by line as the service streams it, and the live stream
WS /v1/pose/stream (needs the `websockets` package: `pip install pose-client[stream]`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pose_client.calls import delay_after_error, delay_after_response
from pose_client.deadline import CallDeadline
from pose_client.errors import PoseAPIError
from pose_client.models import Person
from pose_client.retry import RetryPolicy, RetryState

VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
               ".mkv": "video/x-matroska", ".avi": "video/x-msvideo"}


@dataclass(frozen=True)
class TrackedPerson:
    track_id: int
    person: Person


@dataclass(frozen=True)
class VideoFrame:
    """One frame's answer: `frame` is its index in the video (or the message's sequence number on a stream)."""

    frame: int
    time_s: float
    persons: list[TrackedPerson]
    timings_ms: dict[str, float] = field(default_factory=dict)
    dropped: int = 0  # a stream's frames dropped so far (the client sent faster than it was served)
    error: dict[str, str] | None = None  # a stream frame that could not be read (the stream goes on)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoFrame:
        return cls(int(data["frame"]), float(data["time_s"]),
                   [TrackedPerson(int(p["track_id"]), Person.from_json(p)) for p in data.get("persons", [])],
                   dict(data.get("timings_ms", {})), int(data.get("dropped", 0)), data.get("error"))


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    tracks: int
    raw: dict[str, Any]  # every summary field: video_frames, frames_per_s, timings_ms, model, ...


def video_params(options: dict[str, Any]) -> dict[str, str]:
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in options.items() if v is not None}


def pose_video(http: httpx.Client, retry: RetryPolicy, path: str | Path, options: dict[str, Any],
               timeout: float) -> Iterator[VideoFrame | VideoSummary]:
    """Yields each frame as the service finishes it, then the summary. A refusal before the answer starts is
    retried like any call (429/503 with Retry-After, within `timeout` seconds of the call's start) or raised as
    PoseAPIError; a failure after it has started is raised as PoseAPIError with status 200 (the frames before it
    were yielded). Once streaming, each read waits at most httpx's timeout: a long video is not cut short."""
    path = Path(path)
    kind = VIDEO_TYPES.get(path.suffix.lower(), "application/octet-stream")
    state = RetryState(retry)
    deadline = CallDeadline(timeout, f"{http.base_url}/v1/pose/video")
    while True:
        with path.open("rb") as body:
            try:
                with http.stream("POST", "/v1/pose/video", params=video_params(options), content=body,
                                 headers={"content-type": kind}) as response:
                    if response.is_success:
                        yield from _lines(response)
                        return
                    response.read()
                    delay = delay_after_response(response, state, deadline)
            except httpx.HTTPError as error:
                delay = delay_after_error(error, state, deadline)
        time.sleep(delay)


def _lines(response: httpx.Response) -> Iterator[VideoFrame | VideoSummary]:
    for line in response.iter_lines():
        if not line.strip():
            continue
        data = json.loads(line)
        if "summary" in data:
            summary = data["summary"]
            yield VideoSummary(int(summary["frames"]), int(summary["tracks"]), summary)
        elif "error" in data:
            error = data["error"]
            raise PoseAPIError(200, error.get("code", "unknown"), error.get("message", ""),
                               response.headers.get("x-request-id"))
        else:
            yield VideoFrame.from_json(data)


def stream(base_url: str, headers: dict[str, str], frames: Iterable[bytes],
           options: dict[str, Any], open_timeout_s: float = 30.0) -> Iterator[VideoFrame]:
    """Sends each encoded frame (JPEG/PNG bytes) as it comes from `frames` while yielding the answers as they
    arrive. Frames the service dropped (it is slower than `frames`) get no answer; each answer's `dropped` counts
    them. Ends after the answer to the last frame sent (never the one dropped)."""
    from websockets.sync.client import connect  # optional dependency: pose-client[stream]

    url = base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/v1/pose/stream"
    query = "&".join(f"{k}={v}" for k, v in video_params(options).items())
    sent = [0]
    finished = threading.Event()
    failure: list[BaseException] = []
    with connect(url + (f"?{query}" if query else ""), additional_headers=headers,
                 open_timeout=open_timeout_s, max_size=None) as ws:
        def send_all() -> None:
            try:
                for data in frames:
                    ws.send(bytes(data))
                    sent[0] += 1
            except BaseException as exc:  # the connection closed under us: reported by the receiving side
                failure.append(exc)
            finally:
                finished.set()

        sender = threading.Thread(target=send_all, name="pose-stream-send", daemon=True)
        sender.start()
        while True:
            if finished.is_set() and sent[0] == 0:
                break
            try:
                message = ws.recv(timeout=0.1)
            except TimeoutError:
                continue
            answer = VideoFrame.from_json(json.loads(message))
            yield answer
            if finished.is_set() and answer.frame >= sent[0] - 1:
                break
        sender.join()
    if failure:
        raise failure[0]
