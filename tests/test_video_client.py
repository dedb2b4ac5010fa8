"""pose_client's video calls against the real service (a live server process: uvicorn's own HTTP streaming and
WebSocket stack, not the in-process test client): pose_video iterates frames as they are streamed, stream()
drives WS /v1/pose/stream, and the CLI writes NDJSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pose_client import PoseAPIError, PoseClient, VideoFrame, VideoSummary

from tests.helpers import ROOT, png_bytes
from tests.live_server import LiveServer
from tests.video_helpers import decode_video, encode_video, figure_frames

pytestmark = pytest.mark.integration
TINY = ROOT / "tests/models/tiny_coco_mini_128x96.onnx"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(TINY, env={"POSE_SHUTDOWN_DELAY_S": "0", "POSE_API_KEYS": "k", "POSE_MAX_VIDEO_FRAMES": "20"}) \
            as live:
        yield live


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "walk.webm"
    path.write_bytes(encode_video(figure_frames(6), "webm-vp9"))
    return path


def test_pose_video_yields_each_frame_then_the_summary(server, video_file):
    with PoseClient(server.base_url, api_key="k") as client:
        items = list(client.pose_video(video_file, smooth=False, fps=5))
    frames, summary = items[:-1], items[-1]
    assert all(isinstance(f, VideoFrame) for f in frames) and isinstance(summary, VideoSummary)
    assert [f.frame for f in frames] == [0, 2, 4] and [f.time_s for f in frames] == pytest.approx([0, .2, .4])
    assert summary.frames == 3 and summary.tracks == 1 and summary.raw["video_frames"] == 6
    assert all(f.persons[0].track_id == 1 and len(f.persons[0].person.keypoints) == 17 for f in frames)


def test_refusals_raise_the_services_error(server, tmp_path):
    long_video = tmp_path / "long.mp4"
    long_video.write_bytes(encode_video(figure_frames(21)))
    with PoseClient(server.base_url, api_key="k", max_retries=0) as client, pytest.raises(PoseAPIError) as refused:
        list(client.pose_video(long_video))
    assert refused.value.status == 413 and refused.value.code == "video_too_long"


def test_stream_answers_every_frame_it_serves(server, video_file):
    frames = [png_bytes(pixels) for _, pixels in decode_video(video_file.read_bytes())]
    with PoseClient(server.base_url, api_key="k") as client:
        answers = list(client.stream(iter(frames), smooth=False))
    assert answers[-1].frame == len(frames) - 1
    assert len(answers) + answers[-1].dropped == len(frames)
    assert all(a.error is None and [p.track_id for p in a.persons] == [1] for a in answers)


def test_the_cli_writes_ndjson(server, video_file, tmp_path):
    out = tmp_path / "frames.ndjson"
    done = subprocess.run([sys.executable, "-m", "pose_client", "video", str(video_file), "--url", server.base_url,
                           "--api-key", "k", "--out", str(out)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'client'}"})
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines[:-1]] == list(range(6)) and lines[-1]["summary"]["frames"] == 6
