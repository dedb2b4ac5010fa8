"""The detector side of `fetch`, `export` and `evaluate --detector`: registry entries, a detector fetched by name
end to end (served from 127.0.0.1, never the internet), and every bad input refused in one line, non-zero."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from model_export.__main__ import main
from model_export.fetch import detector_source, fetcher
from model_export.fetch.registry import RegistryEntry, hash_prefix_in_name, load_registry
from model_export.yolox.checkpoint import load_yolox_checkpoint
from model_export.yolox.configs import YOLOX_ARCHS, get_yolox_config
from model_export.yolox.model import YOLOX
from posecore.detection import PersonDetector
from posecore.detection.card import read_detector_card
from tests.yolox_weights import seeded_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "detection" / "yolox_reference.npz"
TINY_POSE_ONNX = Path(__file__).parent / "models" / "tiny_coco_mini_128x96.onnx"


def tiny_state_dict() -> dict[str, torch.Tensor]:
    return seeded_state_dict(YOLOX(get_yolox_config("yolox_tiny")).state_dict(), 7)


def mmdet_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
    """As mmdetection 2.x publishes it: renamed by its converter, with its EMA hook's `ema_*` mirror."""
    with np.load(FIXTURE) as data:
        to_mmdet = dict(zip(data["megvii_keys"].tolist(), data["mmdet_keys"].tolist(), strict=True))
    renamed = {to_mmdet[k]: v for k, v in state_dict.items()}
    ema = {"ema_" + k.replace(".", "_"): v.clone() for k, v in renamed.items()}
    return {"meta": {"epoch": 300, "CLASSES": ("person", "bicycle")}, "state_dict": renamed | ema}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("yolox_checkpoints")
    state_dict = tiny_state_dict()
    paths = {"megvii": folder / "yolox_tiny.pth", "mmdet": folder / "mmdet_tiny.pth"}
    torch.save({"model": state_dict}, paths["megvii"])
    torch.save(mmdet_checkpoint(state_dict), paths["mmdet"])
    return paths


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_both_layouts_load_the_same_weights(checkpoints: dict[str, Path]) -> None:
    """Megvii's {'model': ...} and mmdetection's renamed {'state_dict': ...} with its EMA mirror dropped."""
    expected = tiny_state_dict()
    for layout, path in checkpoints.items():
        model = YOLOX(get_yolox_config("yolox_tiny"))
        report = load_yolox_checkpoint(model, torch.load(path, weights_only=True), str(path))
        assert report.layout == layout and report.dropped_ema == (462 if layout == "mmdet" else 0)
        for key, value in model.state_dict().items():
            assert torch.equal(value, expected[key]), (layout, key)


# ---- the registry ----

def test_detector_entries_come_from_the_two_model_zoos() -> None:
    detectors = [e for e in load_registry() if e.kind == "detector"]
    mmdet = {e.arch for e in detectors if e.url.startswith("https://download.openmmlab.com/mmdetection/v2.0/yolox/")}
    humanart = {e.arch for e in detectors if e.url.startswith("https://download.openmmlab.com/mmpose/v1/projects/")}
    assert mmdet == {"yolox_tiny", "yolox_s", "yolox_l", "yolox_x"}
    assert humanart == {"yolox_tiny", "yolox_s", "yolox_m", "yolox_l", "yolox_x"}
    assert len(detectors) == 9
    for entry in detectors:
        assert entry.arch in YOLOX_ARCHS and hash_prefix_in_name(entry.file_name) == entry.sha256_prefix
        assert entry.ap is not None and 0.3 <= entry.ap < 0.7, entry.name
    by_name = {e.name: e for e in detectors}
    assert by_name["yolox_s_8x8_300e_coco"].ap == 0.405 and by_name["yolox_x_8x8_300e_coco"].ap == 0.509


# ---- fetch NAME, end to end ----

@pytest.fixture
def served_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_fetch_by_name_exports_a_detector_with_its_card(served_folder: tuple[str, Path], checkpoints: dict[str, Path],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, folder = served_folder
    body = checkpoints["mmdet"].read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    file_name = f"yolox_tiny_test_coco-{digest[:8]}.pth"
    (folder / file_name).write_bytes(body)
    entry = RegistryEntry(name="yolox_tiny_test", kind="detector", arch="yolox_tiny", url=f"{base}/{file_name}",
                          sha256_prefix=digest[:8], ap=0.321, publisher="test zoo")
    monkeypatch.setattr(fetcher, "find_entry", lambda name: entry)
    monkeypatch.setattr(detector_source, "find_entry", lambda name: entry)
    output = tmp_path / "models" / "yolox_tiny_test.onnx"
    assert main(["fetch", "yolox_tiny_test", "--cache-dir", str(tmp_path / "cache"), "--output", str(output)]) == 0
    card = read_detector_card(output)
    assert card is not None and card.source is not None
    assert (card.arch, card.preprocessing, card.trained, card.input_size) == ("yolox_tiny", "mmdet", True, (416, 416))
    assert (card.source.sha256, card.source.url, card.source.registry_name, card.source.box_ap,
            card.source.checkpoint_layout) == (digest, entry.url, "yolox_tiny_test", 0.321, "mmdet")
    detector = PersonDetector(output, provider="cpu")
    assert detector.io.fixed_batch is None  # the dynamic batch axis
    assert detector.infer(np.full((3, 3, 416, 416), 114, np.float32)).shape == (3, 3549, 85)
    # evaluate --detector NAME reuses that export instead of fetching again
    (folder / file_name).unlink()
    assert detector_source.resolve_detector("yolox_tiny_test", models_dir=output.parent) == output


# ---- bad input: one line, non-zero ----

def test_unknown_name_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fetch", "yolox_q_8x8_300e_coco"])
    assert exit_info.value.code != 0
    assert "unknown weights 'yolox_q_8x8_300e_coco'" in capsys.readouterr().err


def test_hash_mismatch_names_both_hashes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "yolox_s.pth"
    wrong.write_bytes(b"not the published checkpoint")
    actual = hashlib.sha256(wrong.read_bytes()).hexdigest()
    code = main(["fetch", "yolox_s_8x8_300e_coco", "--from-file", str(wrong), "--cache-dir", str(tmp_path / "c")])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and "4592a793" in line and actual in line


def test_checkpoint_of_another_arch_is_refused(checkpoints: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--arch", "yolox_s", "--checkpoint", str(checkpoints["mmdet"]),
                 "--output", str(tmp_path / "s.onnx")])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and "is not a yolox_s" in line and "shape mismatches" in line and "mmdet layout" in line
    assert not (tmp_path / "s.onnx").exists()


def test_missing_and_unexpected_keys_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dict = tiny_state_dict()
    del state_dict["head.obj_preds.2.bias"]
    state_dict["head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pth"
    torch.save({"model": state_dict}, path)
    code = main(["export", "--arch", "yolox_tiny", "--checkpoint", str(path), "--output", str(tmp_path / "t.onnx")])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and "1 missing keys (head.obj_preds.2.bias)" in line
    assert "1 unexpected keys (head.extra.weight)" in line


def test_an_incomplete_ema_mirror_is_not_dropped_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = mmdet_checkpoint(tiny_state_dict())
    state_dict = checkpoint["state_dict"]
    assert isinstance(state_dict, dict)
    del state_dict["ema_backbone_stem_conv_conv_weight"]
    path = tmp_path / "ema.pth"
    torch.save(checkpoint, path)
    code = main(["export", "--arch", "yolox_tiny", "--checkpoint", str(path), "--output", str(tmp_path / "t.onnx")])
    assert code == 1 and "unexpected keys (ema_" in one_line(capsys.readouterr().err)


def test_truncated_checkpoint_is_one_line(checkpoints: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(checkpoints["megvii"].read_bytes()[:100_000])
    code = main(["export", "--arch", "yolox_tiny", "--checkpoint", str(truncated),
                 "--output", str(tmp_path / "t.onnx")])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and "cannot read" in line and str(truncated) in line


@pytest.mark.parametrize("detector, message", [
    (str(TINY_POSE_ONNX), "is not a detector: its card"),  # the pose model given as the detector
    ("hrnet_w32_coco_256x192", "registry entry of kind pose, not a detector"),
    ("no_such_detector", "no such file, and unknown weights"),
])
def test_evaluate_refuses_what_is_no_detector(detector: str, message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    code = main(["evaluate", "--model", str(TINY_POSE_ONNX), "--annotations", str(annotations), "--images",
                 str(tmp_path), "--detector", detector, "--no-progress"])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and line.startswith("evaluate failed:") and message in line


# ---- make serve DETECTOR=... ----

def make_serve_plan(venv: Path, detector: str) -> subprocess.CompletedProcess[str]:
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / ".installed").touch()  # newer than pyproject.toml: make does not reinstall
    return subprocess.run(["make", "-n", "serve", f"VENV={venv}", "WEIGHTS=hrnet_w32_coco_256x192",
                           f"DETECTOR={detector}"], cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          check=False)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_serve_fetches_a_named_detector_or_takes_a_file(tmp_path: Path) -> None:
    named = make_serve_plan(tmp_path / "venv", "yolox_s_8x8_300e_coco")
    assert named.returncode == 0, named.stderr
    onnx = "models/yolox_s_8x8_300e_coco.onnx"
    assert f"-m model_export fetch yolox_s_8x8_300e_coco  --output {onnx}" in named.stdout
    assert f"-m service --model models/hrnet_w32_coco_256x192.onnx --detector {onnx} " in named.stdout
    given = tmp_path / "det.onnx"
    given.write_bytes(b"onnx")
    by_path = make_serve_plan(tmp_path / "venv", str(given))
    assert by_path.returncode == 0 and "model_export fetch yolox" not in by_path.stdout
    assert f"--detector {given} " in by_path.stdout
    missing = subprocess.run(["make", "detector", f"VENV={tmp_path / 'venv'}",  # the detector target alone
                              f"DETECTOR={tmp_path / 'missing.onnx'}"], cwd=Path(__file__).parents[1],
                             capture_output=True, text=True, check=False)
    assert missing.returncode != 0 and "missing.onnx: no such file" in missing.stderr
