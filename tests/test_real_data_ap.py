"""Real COCO annotations through the serving geometry and decoder, scored by pycocotools.

For every annotated person: GT box -> center/scale -> heatmap-space keypoints (forward 48x64 affine) ->
ideal Gaussian heatmaps (what a perfect network would output) -> decode_heatmaps -> COCO results ->
COCOeval keypoint AP. Any error in box->center/scale, the affine, the decoder or the inverse mapping costs
AP; a negative control proves that the check can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_export.evaluate import coco_keypoint_stats
from posecore.boxes import fit_to_image, parse_boxes
from posecore.geometry import boxes_to_centers_scales, get_affine_transform
from posecore.heatmaps import decode_heatmaps, rescore_person
from posecore.imaging import decode_image
from tests.helpers import DATASETS, dataset_paths

pytest.importorskip("pycocotools", reason="pycocotools (the 'export' extra) is not installed")

HEATMAP_WH = (48, 64)
ASPECT_RATIO = 192 / 256
SIGMA = 2.0
MIN_AP = 0.95


def ideal_heatmaps(keypoints_hm: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """(K, 2) sub-pixel heatmap points -> (K, H, W) unnormalised Gaussians; unlabelled joints stay zero."""
    width, height = HEATMAP_WH
    xs = np.arange(width, dtype=np.float64)[None, None, :]
    ys = np.arange(height, dtype=np.float64)[None, :, None]
    kx, ky = keypoints_hm[:, 0, None, None], keypoints_hm[:, 1, None, None]
    maps = np.exp(-((xs - kx) ** 2 + (ys - ky) ** 2) / (2 * SIGMA**2))
    return (maps * labelled[:, None, None]).astype(np.float32)


def load_persons(annotations: Path) -> tuple[dict, list[dict]]:
    dataset = json.loads(annotations.read_text())
    images = {image["id"]: image for image in dataset["images"]}
    persons = [
        a for a in dataset["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0)
    ]
    return images, persons


def persons_heatmaps(image: dict, own: list[dict]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The ideal heatmaps of one image's persons (in the crops their GT boxes give), with the box scores and the
    crops' centers and scales."""
    rows = parse_boxes([p["bbox"] for p in own])
    assert rows is not None
    boxes, box_scores = fit_to_image(rows, (image["width"], image["height"]))
    centers, scales = boxes_to_centers_scales(boxes, aspect_ratio=ASPECT_RATIO)
    heatmaps = []
    for person, center, scale in zip(own, centers, scales, strict=True):
        gt = np.asarray(person["keypoints"], dtype=np.float64).reshape(-1, 3)
        forward = get_affine_transform(center, scale, HEATMAP_WH)
        keypoints_hm = gt[:, :2] @ forward[:, :2].T + forward[:, 2]
        heatmaps.append(ideal_heatmaps(keypoints_hm, (gt[:, 2] > 0).astype(np.float64)))
    return heatmaps, box_scores, centers, scales


def fake_backend_results(images: dict, persons: list[dict], scale_error: float = 1.0, shift_hm: float = 0.0):
    """COCO keypoint results from ideal heatmaps of the GT keypoints, decoded as the service decodes.

    `scale_error` / `shift_hm` spoil the decoding on purpose for the negative controls.
    """
    results = []
    for image_id in sorted({p["image_id"] for p in persons}):
        own = [p for p in persons if p["image_id"] == image_id]
        heatmaps, box_scores, centers, scales = persons_heatmaps(images[image_id], own)
        preds, maxvals = decode_heatmaps(np.stack(heatmaps), centers, scales * np.float32(scale_error))
        preds = preds + shift_hm * (scales[:, None, :1] * 200 / HEATMAP_WH[0])  # heatmap px -> image px
        for pred, maxval, box_score in zip(preds, maxvals, box_scores, strict=True):
            keypoints = np.concatenate([pred, maxval], axis=1)
            results.append({
                "image_id": image_id,
                "category_id": 1,
                "keypoints": keypoints.reshape(-1).astype(float).tolist(),
                "score": rescore_person(box_score, maxval),
            })
    return results


def keypoint_ap(annotations: Path, results: list[dict]) -> float:
    """COCO keypoint AP over the annotation file's images, by the evaluation code (checked in test_evaluate)."""
    return coco_keypoint_stats(annotations, results)["AP"]


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_ideal_heatmaps_decode_to_coco_ap_above_095(name):
    annotations, folder = dataset_paths(name)
    images, persons = load_persons(annotations)
    assert persons, f"{name}: no annotated persons with keypoints"
    image_ids = sorted({p["image_id"] for p in persons})

    # The images are real and their decoded size is the annotated one.
    for image_id in image_ids:
        image = images[image_id]
        rgb = decode_image((folder / image["file_name"]).read_bytes(), max_bytes=50_000_000, max_pixels=50_000_000)
        assert rgb.shape == (image["height"], image["width"], 3)

    ap = keypoint_ap(annotations, fake_backend_results(images, persons))
    print(f"\n{name}: {len(persons)} persons on {len(image_ids)} images, keypoint AP = {ap:.4f}")
    assert ap >= MIN_AP, f"{name}: AP {ap:.4f} < {MIN_AP}"

    # Negative controls: the same pipeline with a deliberate error must lose AP, so the check can fail.
    shifted = keypoint_ap(annotations, fake_backend_results(images, persons, shift_hm=2.0))
    unpadded = keypoint_ap(annotations, fake_backend_results(images, persons, scale_error=0.8))
    print(f"{name}: negative controls AP = {shifted:.4f} (2 heatmap px shift), {unpadded:.4f} (scale x0.8)")
    assert shifted < ap - 0.1
    assert unpadded < ap - 0.1


def service_pipeline_results(folder: Path, images: dict, persons: list[dict]) -> list[dict]:
    """The same check through the service's own serving layer: image bytes and GT boxes in, the batcher and a
    fake backend that answers each crop with the ideal heatmaps of its person, the codec's decode out."""
    import asyncio
    from collections import deque

    from posecore.codec import PoseCodec
    from posecore.modelcard import ModelCard
    from service.admission import PixelBudget
    from service.batching import MicroBatcher
    from service.metrics import Metrics
    from service.request import RequestDefaults, build_request
    from service.serving import Limits, PoseService

    queued: deque[np.ndarray] = deque()

    def fake_infer(batch: np.ndarray) -> np.ndarray:
        return np.stack([queued.popleft() for _ in range(len(batch))])

    card = ModelCard.official_defaults("ideal-heatmaps", (256, 192), (HEATMAP_WH[1], HEATMAP_WH[0]))
    batcher = MicroBatcher(infer=fake_infer, max_batch_size=4, max_wait_s=0.0, max_queue_items=64)
    batcher.start()
    poser = PoseService(codec=PoseCodec(card), batcher=batcher, metrics=Metrics(),
                        limits=Limits(50_000_000, 50_000_000), pixels=PixelBudget(50_000_000),
                        request_timeout_s=30)
    defaults = RequestDefaults(flip=False, max_boxes=100)
    results = []
    try:
        for image_id in sorted({p["image_id"] for p in persons}):
            own = [p for p in persons if p["image_id"] == image_id]
            queued.extend(persons_heatmaps(images[image_id], own)[0])
            data = (folder / images[image_id]["file_name"]).read_bytes()
            request = build_request(data, {"boxes": [p["bbox"] for p in own]}, defaults)
            result = asyncio.run(poser.estimate(request))
            for person in result.persons:
                results.append({"image_id": image_id, "category_id": 1, "score": person.score,
                                "keypoints": person.keypoints.reshape(-1).astype(float).tolist()})
    finally:
        batcher.close()
        poser.close()
    assert not queued, "every ideal heatmap was consumed by exactly one crop"
    return results


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_service_pipeline_with_ideal_heatmaps_scores_coco_ap_above_095(name):
    annotations, folder = dataset_paths(name)
    images, persons = load_persons(annotations)
    ap = keypoint_ap(annotations, service_pipeline_results(folder, images, persons))
    print(f"\n{name}: service pipeline with ideal heatmaps, keypoint AP = {ap:.4f}")
    assert ap >= MIN_AP
    assert ap == pytest.approx(keypoint_ap(annotations, fake_backend_results(images, persons)))
