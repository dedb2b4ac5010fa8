"""What the service does with the ONNX file it is given: the official tiny model reproduced end to end
through the service's own backend and decoding; bare and fixed-batch models; clean start-up failures."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient

from posecore import heatmaps
from posecore.backend import OrtBackend
from posecore.coco import FLIP_PAIRS
from service.main import create_app
from service.settings import Settings
from tests.helpers import ROOT, assert_error, jpeg_bytes, require_shared


@pytest.fixture(scope="module")
def official_tiny_onnx(tmp_path_factory):
    from model_export.export import export_onnx

    checkpoint = require_shared("reference/tiny_hrnet_state_dict.pt")
    path = tmp_path_factory.mktemp("official") / "tiny_official.onnx"
    export_onnx("tiny", path, checkpoint=checkpoint)
    return path


def test_tiny_model_through_the_service_backend_reproduces_official_predictions(official_tiny_onnx, reference_npz):
    ref = reference_npz("tiny_forward.npz")
    backend = OrtBackend(official_tiny_onnx, provider="cpu", max_batch=4)
    inputs = ref["input"]
    # the service's flip test: originals and mirrored inputs in one batch, as the pipeline sends them
    maps = backend.infer(np.concatenate([inputs, inputs[..., ::-1]]))
    plain, mirrored = maps[:2], maps[2:]
    scale = np.abs(ref["output"]).max()
    np.testing.assert_allclose(plain, ref["output"], atol=1e-5 * scale)
    np.testing.assert_allclose(mirrored, ref["output_of_flipped_input"], atol=1e-5 * scale)

    averaged = heatmaps.flip_test_average(plain, mirrored, np.asarray(FLIP_PAIRS), shift=True)
    np.testing.assert_allclose(averaged, ref["flip_test_averaged"], atol=1e-5 * scale)
    coords, maxvals = heatmaps.decode_heatmaps(averaged, ref["center"], ref["scale"])
    expected = ref["final_preds_flip_test"]
    np.testing.assert_allclose(coords, expected[..., :2], atol=1e-3)
    np.testing.assert_allclose(maxvals[..., 0], expected[..., 2], atol=1e-5 * scale)

    coords, maxvals = heatmaps.decode_heatmaps(plain, ref["center"], ref["scale"])
    np.testing.assert_allclose(coords, ref["final_preds_no_flip"], atol=1e-3)
    np.testing.assert_allclose(maxvals, ref["final_maxvals_no_flip"], atol=1e-5 * scale)


def fixed_batch_copy(source, target, batch: int = 1):
    model = onnx.load(str(source))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, str(target))


def test_bare_onnx_without_card_is_served_with_official_defaults(tiny_onnx, tmp_path):
    bare = tmp_path / "bare.onnx"
    shutil.copy(tiny_onnx, bare)
    with TestClient(create_app(Settings(model_path=bare))) as client:
        card = client.get("/v1/model").json()
        assert card["card_found"] is False and "No model card" in card["warning"]
        assert card["input"]["mean"] == [0.485, 0.456, 0.406] and card["input"]["color_order"] == "RGB"
        assert (card["input"]["height"], card["input"]["width"]) == (256, 192)
        assert (card["output"]["height"], card["output"]["width"]) == (64, 48)
        body = client.post("/v1/pose", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}).json()
        assert len(body["persons"][0]["keypoints"]) == 17


def test_fixed_batch_model_runs_crop_by_crop_with_the_same_answer(tiny_onnx, tmp_path):
    fixed = tmp_path / "fixed.onnx"
    fixed_batch_copy(tiny_onnx, fixed)
    shutil.copy(tiny_onnx.with_suffix(".json"), fixed.with_suffix(".json"))
    backend = OrtBackend(fixed, provider="cpu", max_batch=8)
    assert backend.fixed_batch == 1 and backend.batch_sizes == [1]
    boxes = '[[10, 20, 60, 120], [80, 40, 50, 100], [0, 0, 160, 240]]'
    answers = []
    for path in (tiny_onnx, fixed):
        with TestClient(create_app(Settings(model_path=path))) as client:
            response = client.post("/v1/pose", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")},
                                   data={"boxes": boxes, "flip": "true"})
            assert response.status_code == 200, response.text
            answers.append(response.json()["persons"])
    for dynamic, fixed_person in zip(*answers, strict=True):
        np.testing.assert_allclose(dynamic["coco_keypoints"], fixed_person["coco_keypoints"], atol=1e-3)


class RecordingSession:
    """An ONNX Runtime session that records the batch size of every run it is given."""

    def __init__(self, session) -> None:
        self.session = session
        self.batch_sizes: list[int] = []

    def run(self, output_names, feeds):
        (batch,) = feeds.values()
        self.batch_sizes.append(len(batch))
        return self.session.run(output_names, feeds)


def test_batches_are_padded_to_warmed_up_sizes(tiny_onnx):
    backend = OrtBackend(tiny_onnx, provider="cpu", max_batch=8)
    backend.session = session = RecordingSession(backend.session)
    out = backend.infer(np.zeros((3, 3, 256, 192), np.float32))
    assert out.shape == (3, 17, 64, 48) and session.batch_sizes == [3]  # CPU: every size up to the max is warmed
    backend.batch_sizes = [1, 2, 4, 8]  # the GPU set
    session.batch_sizes.clear()
    assert backend.infer(np.zeros((3, 3, 256, 192), np.float32)).shape[0] == 3 and session.batch_sizes == [4]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_missing_model_stops_startup_with_one_clear_line(tmp_path):
    missing = tmp_path / "nope.onnx"
    result = run_cli("--model", str(missing))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(missing) in lines[0] and "python -m model_export export" in lines[0]


def test_broken_model_stops_startup_with_one_clear_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx file")
    result = run_cli("--model", str(broken))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken) in lines[0], result.stderr


def test_gpu_provider_that_did_not_load_keeps_the_service_unready(tiny_onnx):
    with TestClient(create_app(Settings(model_path=tiny_onnx, provider="cuda"))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "CUDAExecutionProvider" in ready.json()["detail"]
        assert ready.headers["retry-after"]
        refused = client.post("/v1/pose", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")})
        assert_error(refused, 503, "not_ready")
    with TestClient(create_app(Settings(model_path=tiny_onnx, provider="cuda", allow_cpu_fallback=True))) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/model").json()["provider_ok"] is False
