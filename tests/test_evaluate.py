"""COCO keypoint evaluation (model_export.evaluate): the NMS/COCOeval path, the service pipeline in-process, and
the same evaluation through a running service over HTTP.

Data tests run on ../shared/data/coco-mini and coco8-pose and skip cleanly without them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_export.__main__ import main
from model_export.data import load_person_records
from model_export.evaluate import (
    STAT_NAMES,
    LocalRunner,
    ServiceRunner,
    coco_keypoint_stats,
    detection_person_boxes,
    evaluate,
    gt_person_boxes,
    nms_results,
    person_area,
    usable_boxes,
)
from tests.helpers import DATASETS, DETECTIONS, ROOT, dataset_paths, require_shared
from tests.live_server import LiveServer

pytest.importorskip("pycocotools", reason="pycocotools (the 'export' extra) is not installed")


def gt_predictions(annotations: Path, jitter_px: float = 0.0, seed: int = 0) -> list[dict]:
    """Every annotated person's GT keypoints as a prediction (score 1), optionally moved by `jitter_px`."""
    rng = np.random.default_rng(seed)
    predictions = []
    for record in load_person_records(annotations, "."):
        keypoints = np.concatenate([record.joints, record.visible[:, None]], axis=1)
        keypoints[:, :2] += rng.normal(0, jitter_px, (17, 2)) if jitter_px else 0
        predictions.append({"image_id": record.image_id, "keypoints": keypoints, "score": 1.0,
                            "area": person_area(record.box, 0.75)})
    return predictions


# ---- NMS + COCOeval -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DATASETS))
def test_ground_truth_as_predictions_scores_ap_one(name) -> None:
    annotations, _ = dataset_paths(name)
    truth = gt_predictions(annotations)
    # Near-duplicates with lower scores, as overlapping detector boxes give: OKS-NMS (0.9) must remove them.
    duplicates = [{**p, "keypoints": p["keypoints"] + [0.5, 0.5, 0], "score": 0.5} for p in truth]
    results = nms_results(truth + duplicates)
    assert len(results) == len(truth)
    assert all(r["score"] == 1.0 and r["category_id"] == 1 for r in results)
    stats = coco_keypoint_stats(annotations, results)
    print(f"\n{name}: {len(truth)} GT persons as predictions -> " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
    assert list(stats) == list(STAT_NAMES)
    assert stats["AP"] == 1.0 and stats["AR"] == 1.0
    # Negative control: the same path scores keypoints moved by ~8 px clearly lower.
    moved = coco_keypoint_stats(annotations, nms_results(gt_predictions(annotations, jitter_px=8.0)))
    assert moved["AP"] < 0.9


def test_no_results_score_zero() -> None:
    annotations, _ = dataset_paths("coco-mini")
    assert coco_keypoint_stats(annotations, []) == {name: 0.0 for name in STAT_NAMES}


def test_person_boxes_from_gt_and_detections() -> None:
    annotations, _ = dataset_paths("coco-mini")
    gt = gt_person_boxes(annotations)
    assert sum(len(b) for b in gt.values()) == 12  # the 12 persons with keypoints, of 14 annotations
    assert all((b[:, 4] == 1).all() for b in gt.values())
    detections = detection_person_boxes(require_shared(f"data/{DETECTIONS}"))
    assert sum(len(b) for b in detections.values()) == 118
    assert len(detection_person_boxes(require_shared(f"data/{DETECTIONS}"), threshold=0.5)) <= 4
    boxes = np.array([[0, 0, 10, 10, 1], [5, 5, 0, 10, 1], [200, 5, 10, 10, 1], [np.nan, 0, 1, 1, 1]], float)
    kept, dropped = usable_boxes(boxes, width=100, height=100)
    assert kept.tolist() == [[0, 0, 10, 10, 1]] and dropped == 3


# ---- the service pipeline, in-process and over HTTP -----------------------------------------------------------

def flat_results(results: list[dict]) -> np.ndarray:
    return np.array([[r["image_id"], r["score"], *r["keypoints"]] for r in results])


@pytest.mark.integration
def test_direct_and_served_evaluation_agree(tiny_onnx, tmp_path) -> None:
    """The same ONNX file evaluated in-process and through `python -m service` gives identical keypoints,
    scores and COCO stats: on GT boxes with flip test (coco-mini), detector boxes sent in chunks of 16 per
    request (coco-mini), and GT boxes without flip (coco8-pose)."""
    cases = [("coco-mini", None, True), ("coco-mini", DETECTIONS, False), ("coco8-pose", None, False)]
    direct = LocalRunner.from_onnx(tiny_onnx)
    with LiveServer(tiny_onnx) as server:
        served = ServiceRunner(server.base_url, max_boxes=16)
        try:
            assert served.card == direct.card
            for name, detections, flip in cases:
                annotations, images = dataset_paths(name)
                det = require_shared(f"data/{detections}") if detections else None
                here = evaluate(annotations, images, direct, direct.card, det, flip=flip)
                there = evaluate(annotations, images, served, served.card, det, flip=flip)
                print(f"\n{name} ({'detections' if det else 'GT boxes'}, flip {flip}): {here.num_boxes} boxes, "
                      f"AP direct {here.stats['AP']:.6f}, served {there.stats['AP']:.6f}")
                assert here.num_boxes == there.num_boxes > 0 and len(here.results) == len(there.results)
                np.testing.assert_allclose(flat_results(there.results), flat_results(here.results), rtol=0,
                                           atol=1e-6)
                assert there.stats == pytest.approx(here.stats, abs=1e-6)
            # The command line's --url path: the same stats as the in-process run of the last case.
            out = tmp_path / "served.json"
            assert main(["evaluate", "--url", server.base_url, "--annotations", str(annotations), "--images",
                         str(images), "--no-flip", "--no-progress", "--json-out", str(out)]) == 0
            body = json.loads(out.read_text())
            assert body["url"] == server.base_url and body["stats"] == pytest.approx(here.stats, abs=1e-6)
        finally:
            served.close()


# ---- command line -------------------------------------------------------------------------------------------

def test_evaluate_help_documents_the_command() -> None:
    out = subprocess.run([sys.executable, "-m", "model_export", "evaluate", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for phrase in ("--model", "--annotations", "--images", "--detections", "--flip", "--no-flip", "--url",
                   "--json-out", "COCOeval", "OKS-NMS", "0.2", "PoseCodec"):
        assert phrase in out.stdout, phrase


def test_cli_evaluate_prints_and_writes_the_stats(tiny_onnx, tmp_path, capsys) -> None:
    annotations, images = dataset_paths("coco-mini")
    out = tmp_path / "ap.json"
    assert main(["evaluate", "--model", str(tiny_onnx), "--annotations", str(annotations), "--images", str(images),
                 "--no-flip", "--no-progress", "--json-out", str(out), "--results-out", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    for name in STAT_NAMES:
        assert f"  {name} " in printed
    assert "UNTRAINED" in printed and "12 person boxes" in printed
    body = json.loads(out.read_text())
    assert list(body["stats"]) == list(STAT_NAMES) and len(body["stats_list"]) == 10
    assert body["flip"] is False and body["num_boxes"] == 12 and body["card"]["trained"] is False
    assert len(json.loads((tmp_path / "r.json").read_text())) == body["num_results"] == 12


def test_cli_evaluate_reports_a_missing_file(tiny_onnx, tmp_path, capsys) -> None:
    _, images = dataset_paths("coco-mini")
    assert main(["evaluate", "--model", str(tiny_onnx), "--annotations", str(tmp_path / "none.json"),
                 "--images", str(images)]) == 2
    assert "annotation file not found" in capsys.readouterr().err


def test_cli_evaluate_decode_runs_the_chosen_pipeline(tmp_path, capsys) -> None:
    """--decode on the trained test model (its card has no codec, so every pipeline is allowed): the stats and
    keypoints come from the chosen pipeline, and the JSON says which ran."""
    annotations, images = dataset_paths("coco-mini")
    model = ROOT / "tests/models/tiny_coco_mini_128x96.onnx"
    outcomes = {}
    for decode in ("official", "msra", "dark", "udp"):
        out, results = tmp_path / f"{decode}.json", tmp_path / f"{decode}.results.json"
        assert main(["evaluate", "--model", str(model), "--annotations", str(annotations), "--images", str(images),
                     "--decode", decode, "--no-progress", "--json-out", str(out), "--results-out", str(results)]) == 0
        assert f"decode {decode}," in capsys.readouterr().out
        body = json.loads(out.read_text())
        assert body["decode"] == decode
        outcomes[decode] = (body["stats"]["AP"], json.loads(results.read_text()))
    print("\ncoco-mini GT boxes, flip: AP " + ", ".join(f"{d} {ap:.4f}" for d, (ap, _) in outcomes.items()))
    keypoints = {d: flat_results(r) for d, (_, r) in outcomes.items()}
    assert not np.array_equal(keypoints["official"], keypoints["dark"])
    assert not np.array_equal(keypoints["official"], keypoints["udp"])


def test_cli_evaluate_refuses_an_unknown_decode(tiny_onnx) -> None:
    annotations, images = dataset_paths("coco-mini")
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", str(tiny_onnx), "--annotations", str(annotations), "--images", str(images),
              "--decode", "simcc"])
