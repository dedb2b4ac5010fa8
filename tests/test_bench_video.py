"""The bench's video phase (service.bench.video_phase): an H.264 clip made from a workload photo, posted by 1 and N
concurrent clients to a real service, reported as frames/s beside the image path's crops/s."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bench.http_load import running_service
from service.bench.video_phase import VideoPhase, make_clip
from service.bench.workload import Photo
from tests.helpers import jpeg_bytes
from tests.video_helpers import decode_video


def test_the_clip_pans_across_the_photo_at_its_frame_rate() -> None:
    clip = make_clip(Photo("p.jpg", jpeg_bytes(161, 121, seed=3), [[0, 0, 10, 10]]), frames=12, fps=30)
    frames = decode_video(clip)
    assert len(frames) == 12 and [t for t, _ in frames] == pytest.approx([i / 30 for i in range(12)])
    height, width = frames[0][1].shape[:2]
    assert (width % 2, height % 2) == (0, 0) and width < 161
    assert (frames[0][1] != frames[-1][1]).any()  # it pans


@pytest.mark.integration
def test_the_video_phase_measures_frames_per_second(tmp_path: Path) -> None:
    tiny = Path(__file__).parent / "models" / "tiny_coco_mini_128x96.onnx"
    clip = make_clip(Photo("p.jpg", jpeg_bytes(96, 128, seed=1), []), frames=8)
    env = {"POSE_PROVIDER": "cpu", "POSE_INTRA_OP_THREADS": "1"}
    with running_service(tiny, env, ready_timeout_s=90) as (url, _):
        videos = VideoPhase(url, clip, clients=2, seconds=0.3)
        videos.run_round()
    assert set(videos.phases) == {"video_1c", "video"}
    for key, phase in videos.phases.items():
        assert phase.errors == 0 and phase.requests > 0
        assert videos.frames[key] == 8 * phase.requests and phase.crops == videos.frames[key]  # 1 person a frame
    rates = videos.frames_per_s()
    assert all(rate > 0 for rate in rates.values())
    assert "ratio" in videos.describe(100.0) and str(rates["video"]) in videos.describe(100.0)
