"""The bench's bare-photo phase (service.bench.detect_phase): photos without boxes to a service with a detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bench.__main__ import STAGE_ORDER
from service.bench.detect_phase import BarePhotoPhase, describe, detector_env
from service.bench.http_load import encode_request, running_service
from service.bench.workload import Photo
from tests.detector_model import build_scene_detector
from tests.helpers import jpeg_bytes

PHOTO_WH = (200, 150)


def test_a_bare_photo_request_carries_no_boxes() -> None:
    photo = Photo("p.jpg", b"JPEGDATA", [[1.0, 2.0, 3.0, 4.0]])
    with_boxes = encode_request("127.0.0.1:1", photo)
    bare = encode_request("127.0.0.1:1", photo, with_boxes=False)
    assert with_boxes.startswith(b"POST /v1/pose?boxes=")
    assert bare.startswith(b"POST /v1/pose HTTP/1.1\r\n") and bare.endswith(b"\r\n\r\nJPEGDATA")
    assert "detect" in STAGE_ORDER


@pytest.mark.integration
def test_the_bare_photo_phase_reports_the_detect_stage_and_the_persons_found(tiny_onnx: Path, tmp_path: Path) -> None:
    detector, scene = build_scene_detector(tmp_path / "scene_detector.onnx", PHOTO_WH)
    photos = [Photo(f"{seed}.jpg", jpeg_bytes(*PHOTO_WH, seed=seed), [[0.0, 0.0, 10.0, 10.0]] * 3) for seed in (1, 2)]
    env = {"POSE_PROVIDER": "cpu", "POSE_INTRA_OP_THREADS": "1"} | detector_env(detector)
    with running_service(tiny_onnx, env, ready_timeout_s=90) as (url, _):
        bare = BarePhotoPhase(url, photos, clients=2, seconds=0.2)
        bare.run_round()
    phases = bare.finished_phases()
    assert set(phases) == {"bare_photo_1c", "bare_photo"}
    found = len(scene.persons)  # the scene: two persons kept out of a duplicate, a faint one and a car
    for key, phase in phases.items():
        assert phase.errors == 0 and phase.requests > 0
        assert bare.persons_per_image(key) == found
        assert phase.crops == found * phase.requests
    stages = bare.stages_ms()
    for key in phases:
        assert stages[key]["detect"] > 0 and stages[key]["inference"] > 0
    summary = bare.summary()
    assert summary == {"annotated_persons_per_image": 3.0, "bare_photo_1c_persons_per_image": 2.0,
                       "bare_photo_persons_per_image": 2.0}
    assert "persons found per photo: bare_photo_1c 2.0, bare_photo 2.0" in describe(summary, detector, None)


def test_the_bench_detector_is_a_file_or_an_arch_exported_at_bench_time(tmp_path: Path) -> None:
    from service.bench.detector_model import resolve_bench_detector

    existing = tmp_path / "given.onnx"
    existing.write_bytes(b"x")
    assert resolve_bench_detector(str(existing), tmp_path) == existing
    with pytest.raises(SystemExit, match="detector not found"):
        resolve_bench_detector(str(tmp_path / "missing.onnx"), tmp_path)
    with pytest.raises(SystemExit, match=r"neither a file nor an arch model_export can export: .*invalid choice"):
        resolve_bench_detector("yolox_q", tmp_path)


@pytest.mark.slow
def test_a_seeded_yolox_is_built_and_timed_per_photo(tmp_path: Path) -> None:
    from service.bench.detector_model import detector_infer_ms, resolve_bench_detector

    path = resolve_bench_detector("yolox_tiny", tmp_path)
    assert path == tmp_path / "yolox_tiny_seed0.onnx" and path.with_suffix(".json").is_file()
    timings = detector_infer_ms(path, (1, 2), 0.2)
    assert set(timings) == {"batch_1", "batch_2"} and all(ms > 0 for ms in timings.values())
