"""POST /v1/pose/video and /v1/pose/video/render in-process: the four containers/codecs, exactness against
/v1/pose on the decoded frames, timestamps from the container, tracking and smoothing through the endpoint,
sampling, detect_every, and every refusal as a 4xx JSON answer before any frame line."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from posecore.errors import PoseError
from service.api.video import take_video_slot
from service.main import create_app
from service.metrics import Metrics
from service.settings import Settings
from service.state import ServiceState
from tests.detector_model import build_scene_detector
from tests.helpers import ROOT, assert_error, png_bytes
from tests.video_helpers import FORMATS, decode_video, encode_video, figure_frames

TINY = ROOT / "tests/models/tiny_coco_mini_128x96.onnx"
WH = (160, 120)


def lines(response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in response.text.splitlines()]


def post_video(client, data: bytes, kind: str = "video/mp4", **params):
    return client.post("/v1/pose/video", content=data, headers={"content-type": kind}, params=params)


@pytest.fixture(scope="module")
def video() -> bytes:
    return encode_video(figure_frames(6, *WH), "mp4-h264")


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(model_path=TINY, provider="cpu", max_video_frames=8,
                                        max_video_pixels=WH[0] * WH[1]))) as client:
        yield client


@pytest.fixture(scope="module")
def detecting(tmp_path_factory):
    path, scene = build_scene_detector(tmp_path_factory.mktemp("detector") / "scene.onnx", WH)
    with TestClient(create_app(Settings(model_path=TINY, detector_path=path, provider="cpu"))) as client:
        yield client, scene


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_every_container_streams_a_line_per_frame_then_the_summary(client, kind):
    data = encode_video(figure_frames(5, *WH), kind)
    body = lines(post_video(client, data, "video/x-msvideo" if kind.startswith("avi") else f"video/{kind[:4]}"))
    frames, summary = body[:-1], body[-1]["summary"]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3, 4]
    # the container's own timestamps (pts x time_base), which the test decodes independently
    assert [f["time_s"] for f in frames] == pytest.approx([t for t, _ in decode_video(data)])
    assert [f["time_s"] for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert summary["frames"] == summary["video_frames"] == 5 and summary["tracks"] == 1
    assert (summary["width"], summary["height"]) == WH and summary["model"]["name"]
    assert {"video", "preprocess", "queue", "inference", "postprocess"} <= set(frames[0]["timings_ms"])
    person = frames[0]["persons"][0]
    assert person["track_id"] == 1 and len(person["coco_keypoints"]) == 51 and len(person["keypoints"]) == 17


@pytest.mark.parametrize("flip", ["false", "true"])
def test_unsmoothed_keypoints_equal_the_decoded_frame_posted_to_v1_pose(detecting, flip):
    client, scene = detecting
    data = encode_video(figure_frames(4, *WH, people=2), "mp4-mpeg4")
    frames = lines(post_video(client, data, smooth="false", flip=flip))[:-1]
    decoded = decode_video(data)
    assert len(frames) == len(decoded) == 4
    for line, (_, pixels) in zip(frames, decoded, strict=True):
        image = client.post("/v1/pose", files={"image": ("f.png", png_bytes(pixels), "image/png")},
                            data={"flip": flip}).json()
        assert len(line["persons"]) == len(image["persons"]) == len(scene.persons)
        for got, want in zip(line["persons"], image["persons"], strict=True):
            assert got["coco_keypoints"] == want["coco_keypoints"]  # exact: the same pipeline on the same pixels
            assert got["box"] == want["box"] and got["score"] == want["score"]
    ids = [[p["track_id"] for p in f["persons"]] for f in frames]
    assert all(sorted(i) == [1, 2] for i in ids) and len({tuple(i) for i in ids}) == 1  # stable, in order


def test_the_decode_option_runs_that_pipeline_on_every_frame_as_v1_pose_does(detecting):
    client, _ = detecting
    data = encode_video(figure_frames(3, *WH, people=2), "mp4-mpeg4")
    answers = {decode: lines(post_video(client, data, smooth="false", decode=decode))
               for decode in ("official", "dark")}
    assert answers["dark"][-1]["summary"]["decode"] == "dark"
    assert answers["official"][-1]["summary"]["decode"] == "official"
    moved = False
    for line, official, (_, pixels) in zip(answers["dark"][:-1], answers["official"][:-1], decode_video(data),
                                           strict=True):
        image = client.post("/v1/pose", files={"image": ("f.png", png_bytes(pixels), "image/png")},
                            data={"decode": "dark"}).json()
        assert image["decode"] == "dark"
        for got, want in zip(line["persons"], image["persons"], strict=True):
            assert got["coco_keypoints"] == want["coco_keypoints"]
        moved |= any(a["coco_keypoints"] != b["coco_keypoints"] for a, b in zip(line["persons"], official["persons"],
                                                                                strict=True))
    assert moved  # DARK's refinement reached the frames: not the official quarter-pixel shift


def test_smoothing_starts_raw_and_then_filters(detecting):
    client, _ = detecting
    data = encode_video(figure_frames(5, *WH, people=2), "mp4-h264")
    raw = lines(post_video(client, data, smooth="false"))[:-1]
    smooth = lines(post_video(client, data))[:-1]
    assert smooth[0]["persons"] == raw[0]["persons"]  # frame 0: the raw value
    later = [(s, r) for s, r in zip(smooth[1:], raw[1:], strict=True)]
    assert any(s["persons"][0]["coco_keypoints"] != r["persons"][0]["coco_keypoints"] for s, r in later)
    for s, r in later:  # only coordinates are filtered: scores and boxes are the raw ones
        assert s["persons"][0]["coco_keypoints"][2::3] == r["persons"][0]["coco_keypoints"][2::3]
        assert s["persons"][0]["box"] == r["persons"][0]["box"]
    # an enormous cutoff lets everything through: the parameters reach the filter
    loose = lines(post_video(client, data, smooth_min_cutoff="1e9"))[:-1]
    for s, r in zip(loose, raw, strict=True):
        assert s["persons"][0]["coco_keypoints"] == pytest.approx(r["persons"][0]["coco_keypoints"], abs=1e-3)


def test_fps_samples_by_presentation_time(client, video):
    frames = lines(post_video(client, video, fps="5"))[:-1]
    assert [f["frame"] for f in frames] == [0, 2, 4] and [f["time_s"] for f in frames] == pytest.approx([0, .2, .4])


def test_detect_every_takes_boxes_from_the_last_keypoints_between_detector_runs(detecting):
    client, _ = detecting
    data = encode_video(figure_frames(5, *WH, people=2), "mp4-h264")
    detected = lines(post_video(client, data, smooth="false"))[:-1]
    sparse = lines(post_video(client, data, smooth="false", detect_every="3"))[:-1]
    boxes = [[p["box"] for p in f["persons"]] for f in sparse]
    want = [[p["box"] for p in f["persons"]] for f in detected]
    assert boxes[0] == want[0] and boxes[3] == want[3]  # the detector's frames
    assert boxes[1] != want[1] and boxes[2] != want[2] and boxes[4] != want[4]  # carried from keypoints
    # (track IDs are not checked here: the test model's keypoints are meaningless, so the boxes they give drift;
    # tracking itself is proven in tests/test_video_tracking.py and above with the detector on every frame)


def audio_only() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return out.getvalue()


@pytest.mark.parametrize(("data", "code"), [
    (b"not a video at all" * 50, "invalid_video"),
    (b"", "invalid_video"),
    (audio_only(), "invalid_video"),  # a container without a video stream
])
def test_bad_files_are_4xx_json_before_any_frame_line(client, data, code):
    assert_error(post_video(client, data), 400, code)


def test_a_truncated_video_is_refused(client, video):
    response = post_video(client, video[: len(video) // 2])
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_video"


def test_limits_refuse_whole_videos(client, tmp_path):
    assert_error(post_video(client, encode_video(figure_frames(9, *WH))), 413, "video_too_long")  # 9 > 8
    big = encode_video(figure_frames(2, WH[0] + 2, WH[1]))
    assert_error(post_video(client, big), 413, "video_too_many_pixels")
    with TestClient(create_app(Settings(model_path=TINY, provider="cpu", max_video_bytes=1000))) as small:
        data = encode_video(figure_frames(3, *WH))
        assert_error(post_video(small, data), 413, "video_too_large")
        assert_error(small.post("/v1/pose/video", files={"video": ("v.mp4", data, "video/mp4")}), 413,
                     "video_too_large")
    with TestClient(create_app(Settings(model_path=TINY, provider="cpu", max_video_decode_s=1e-6))) as slow:
        assert_error(post_video(slow, encode_video(figure_frames(3, *WH))), 422, "video_too_complex")


def test_requests_that_are_not_videos_or_have_bad_options(client, video):
    assert_error(client.post("/v1/pose/video", content=b"{}", headers={"content-type": "application/json"}), 415,
                 "unsupported_media_type")
    assert_error(client.post("/v1/pose/video", files={"image": ("v.mp4", video, "video/mp4")}), 400,
                 "invalid_request")
    for name, value in [("fps", "0"), ("fps", "nan"), ("detect_every", "0"), ("smooth", "maybe"),
                        ("smooth_beta", "-1"), ("track_threshold", "1.5"), ("track_max_missing", "-1"),
                        ("decode", "sharpest")]:
        assert_error(post_video(client, video, **{name: value}), 400, "invalid_request")


def test_the_service_stays_ready_and_leaks_no_temporary_file(client, video, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where any named spool file would land
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        assert_error(post_video(client, b"garbage" * 100), 400, "invalid_video")
        assert_error(post_video(client, encode_video(figure_frames(9, *WH))), 413, "video_too_long")
        lines(post_video(client, video))
        lines(client.post("/v1/pose/video", files={"video": ("v.mp4", video * 30, "video/mp4")}))
    assert len(os.listdir("/proc/self/fd")) <= fds + 1  # every temporary file was closed (hence removed)
    assert list(Path(tmp_path).iterdir()) == []
    assert client.get("/readyz").status_code == 200


def test_multipart_uploads_take_their_options_from_the_form(client, video):
    response = client.post("/v1/pose/video", files={"video": ("v.mp4", video, "video/mp4")}, data={"fps": "5"})
    assert [f["frame"] for f in lines(response)[:-1]] == [0, 2, 4]


def test_concurrent_videos_beyond_the_limit_are_429(tmp_path):
    state = ServiceState(settings=Settings(max_concurrent_videos=1), metrics=Metrics())
    release = take_video_slot(state)
    with pytest.raises(PoseError) as refused:
        take_video_slot(state)
    assert refused.value.code == "overloaded" and refused.value.status == 429
    release()
    release()  # idempotent: one place is given back once
    take_video_slot(state)()
    assert state.videos_active == 0


def test_render_returns_the_drawn_video_as_mp4(client, video):
    response = client.post("/v1/pose/video/render", files={"video": ("v.mp4", video, "video/mp4")})
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert response.headers["x-video-frames"] == "6" and response.headers["x-video-tracks"] == "1"
    drawn = decode_video(response.content)
    source = decode_video(video)
    assert len(drawn) == len(source)
    with av.open(io.BytesIO(response.content)) as container:
        assert container.streams.video[0].codec_context.name in ("h264", "mpeg4")
    # something was drawn: the frames differ well beyond compression noise
    assert np.abs(drawn[0][1].astype(int) - source[0][1].astype(int)).max() > 100


def test_metrics_count_frames_tracks_and_the_video_stage(client, video):
    lines(post_video(client, video))
    text = client.get("/metrics").text
    assert 'pose_video_frames_total{source="file"}' in text
    assert 'pose_video_tracks_total{source="file"}' in text
    assert 'pose_stage_duration_seconds_count{stage="video"}' in text


def test_a_frame_that_does_not_decode_ends_the_stream_with_an_error_line_after_the_frames_before_it(client):
    data = bytearray(encode_video(figure_frames(6, *WH), "avi-mjpeg"))
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]  # each frame's JPEG
    assert len(starts) == 6
    data[starts[3] + 2:starts[3] + 2000] = bytes(1998)  # frame 3's JPEG wiped after its start marker
    body = lines(post_video(client, bytes(data), "video/x-msvideo"))
    assert [line["frame"] for line in body[:-1]] == [0, 1, 2]
    assert body[-1]["error"]["code"] == "invalid_video" and body[-1]["frames"] == 3 and "summary" not in body[-1]
    assert client.get("/readyz").status_code == 200


def test_a_video_keeps_at_most_its_frames_in_flight_and_images_are_served_beside_it():
    settings = Settings(model_path=TINY, provider="cpu", video_frames_in_flight=2, max_queue_crops=3)
    with TestClient(create_app(settings)) as client:
        poser = client.app.state.service.poser
        estimate, running, most = poser.estimate_frame, [0], [0]

        async def counted(*args, **kwargs):
            running[0] += 1
            most[0] = max(most[0], running[0])
            try:
                return await estimate(*args, **kwargs)
            finally:
                running[0] -= 1

        poser.estimate_frame = counted
        video = encode_video(figure_frames(24, *WH))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answer = pool.submit(post_video, client, video)
            images = [client.post("/v1/pose", files={"image": ("f.png", png_bytes(figure_frames(1, *WH)[0]),
                                                                "image/png")}) for _ in range(6)]
            frames = lines(answer.result())[:-1]
    assert len(frames) == 24 and most[0] == 2  # pipelined, and never more than POSE_VIDEO_FRAMES_IN_FLIGHT
    assert [r.status_code for r in images] == [200] * 6  # the video's 2 crops leave room for an image's one
