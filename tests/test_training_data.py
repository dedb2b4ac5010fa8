"""Training data: the official loss, the COCO keypoint dataset (records, targets) and its augmentation.

The data tests run on ../shared/data/coco-mini and coco8-pose and skip cleanly without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model_export.configs import get_config
from model_export.data import (
    Augmentation,
    CocoKeypointDataset,
    clean_box,
    fliplr_joints,
    half_body_center_scale,
    load_person_records,
)
from model_export.data.dataset import UPPER_BODY_JOINTS
from model_export.loss import JointsMSELoss
from posecore import coco
from posecore.geometry import get_affine_transform
from posecore.heatmaps import get_max_preds
from tests.helpers import DATASETS, dataset_paths

pytest.importorskip("pycocotools", reason="pycocotools (the 'export' extra) is not installed")

SWAPPED = np.arange(17)
for _left, _right in coco.FLIP_PAIRS:
    SWAPPED[_left], SWAPPED[_right] = _right, _left


# ---- loss ---------------------------------------------------------------------------------------------------

def official_joints_mse(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """leoxiaobin core/loss.py JointsMSELoss(use_target_weight=True), verbatim in structure."""
    criterion = torch.nn.MSELoss(reduction="mean")
    batch, joints = output.size(0), output.size(1)
    preds = output.reshape((batch, joints, -1)).split(1, 1)
    gts = target.reshape((batch, joints, -1)).split(1, 1)
    loss = 0
    for j in range(joints):
        pred, gt = preds[j].squeeze(), gts[j].squeeze()
        loss += 0.5 * criterion(pred.mul(weight[:, j]), gt.mul(weight[:, j]))
    return loss / joints


def test_loss_is_the_official_joints_mse() -> None:
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(3, 17, 16, 12, generator=generator)
    target = torch.rand(3, 17, 16, 12, generator=generator)
    weight = (torch.rand(3, 17, 1, generator=generator) > 0.3).float() * 1.5
    ours = JointsMSELoss()(output, target, weight)
    torch.testing.assert_close(ours, official_joints_mse(output, target, weight), rtol=1e-6, atol=1e-7)
    # A joint of weight 0 contributes nothing, whatever the network says there.
    spoiled = output.clone()
    spoiled[weight[..., 0] == 0] = 100.0
    torch.testing.assert_close(JointsMSELoss()(spoiled, target, weight), ours)


# ---- dataset: records, targets ------------------------------------------------------------------------------

def test_gt_box_cleaning_is_official() -> None:
    assert clean_box([-5, 10, 50, 40], width=100, height=80, area=10) == [0.0, 10.0, 49.0, 39.0]
    assert clean_box([90, 70, 50, 40], width=100, height=80, area=10) == [90.0, 70.0, 9.0, 9.0]  # clipped at W-1
    assert clean_box([10, 10, 0.5, 0.5], width=100, height=80, area=1) == [10.0, 10.0, 0.0, 0.0]  # kept, as official
    assert clean_box([10, 10, 20, 20], width=100, height=80, area=0) is None
    assert clean_box([120, 10, 20, 20], width=100, height=80, area=5) is None


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_records_are_the_annotated_persons(name) -> None:
    annotations, images = dataset_paths(name)
    records = load_person_records(annotations, images)
    raw = json.loads(annotations.read_text())["annotations"]
    expected = [a for a in raw if not a.get("iscrowd") and max(a["keypoints"]) > 0]
    assert sorted(r.annotation_id for r in records) == sorted(a["id"] for a in expected)
    assert all(r.image_path.is_file() for r in records)
    for record in records:
        assert record.scale.dtype == np.float32 and record.center.dtype == np.float32
        assert set(np.unique(record.visible)) <= {0.0, 1.0}


def roundtrip_errors(dataset: CocoKeypointDataset) -> tuple[list[float], int, int]:
    """For every labelled joint: the target's argmax mapped back to the image, compared with the keypoint.

    Returns the errors in heatmap pixels (Euclidean) of the joints whose rounded center lies on the map, the
    number of edge joints checked separately, and the number of joints off the map (weight 0).
    """
    errors, edge, off_map = [], 0, 0
    width, height = dataset.heatmap_wh
    for index, record in enumerate(dataset.records):
        sample = dataset.sample(index)
        meta, weight = sample["meta"], sample["target_weight"][:, 0]
        coords, _ = get_max_preds(sample["target"][None])
        inverse = get_affine_transform(meta["center"], meta["scale"], dataset.heatmap_wh,
                                       rotation_deg=meta["rotation"], inverse=True)
        points = coords[0] @ inverse[:, :2].T + inverse[:, 2]
        joints_hm, order = meta["joints_hm"], np.arange(17)
        if meta["flipped"]:  # back to the original image and joint order
            points[:, 0] = meta["image_width"] - 1 - points[:, 0]
            order = SWAPPED
        image_px_per_heatmap_px = meta["scale"][0] * 200 / width
        for joint in range(17):
            j = order[joint]  # the sample's channel that holds original joint `joint`
            if record.visible[joint] == 0:
                assert weight[j] == 0, f"unlabelled joint {joint} of annotation {record.annotation_id} has weight"
                assert not sample["target"][j].any()
                continue
            mu = np.floor(joints_hm[j] + 0.5)
            if weight[j] == 0:  # its 3-sigma square lies wholly off the map
                off_map += 1
                radius = 3 * dataset.config.sigma
                assert (mu[0] + radius < 0 or mu[0] - radius >= width or mu[1] + radius < 0
                        or mu[1] - radius >= height), f"joint {joint} on the map but weight 0"
                continue
            if not (0 <= mu[0] < width and 0 <= mu[1] < height):
                # Center off the map, Gaussian tail on it: the peak is the nearest map pixel, as official.
                edge += 1
                np.testing.assert_array_equal(coords[0, j], np.clip(mu, 0, [width - 1, height - 1]))
                continue
            errors.append(float(np.linalg.norm(points[j] - record.joints[joint]) / image_px_per_heatmap_px))
    return errors, edge, off_map


@pytest.mark.parametrize("augment", [False, True], ids=["test-crop", "augmented"])
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_target_argmax_maps_back_to_the_keypoint(name, augment) -> None:
    """Bound: the target peak is the keypoint rounded to the nearest heatmap pixel (official mu = int(x + 0.5)),
    so each heatmap coordinate is off by at most 0.5 px and the distance by at most sqrt(2)/2 = 0.71 heatmap px
    (also under rotation: the error is measured along the heatmap's own axes, and distances are preserved).
    That is below 1 heatmap pixel = the stride-scaled pixel (scale * 200 / heatmap width image pixels)."""
    annotations, images = dataset_paths(name)
    dataset = CocoKeypointDataset.from_coco(annotations, images, get_config("tiny"),
                                            augmentation=Augmentation() if augment else None, seed=3)
    errors, edge, off_map = roundtrip_errors(dataset)
    bound = np.sqrt(2) / 2 + 1e-4  # + float32 rounding of the affine
    print(f"\n{name} ({'augmented' if augment else 'test crop'}): {len(errors)} joints, max error "
          f"{max(errors):.3f} heatmap px (bound {bound:.3f}); {edge} edge joints, {off_map} off the map")
    assert len(errors) > 100
    assert max(errors) <= bound


# ---- dataset: augmentation ----------------------------------------------------------------------------------

def test_augmented_samples_have_valid_shapes() -> None:
    annotations, images = dataset_paths("coco8-pose")
    config = get_config("tiny")
    dataset = CocoKeypointDataset.from_coco(annotations, images, config, augmentation=Augmentation(), seed=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=7, shuffle=False)
    rotations, flips = [], []
    for batch in loader:
        n = len(batch["input"])
        assert batch["input"].shape == (n, 3, 256, 192) and batch["input"].dtype == torch.float32
        assert batch["target"].shape == (n, 17, 64, 48) and batch["target_weight"].shape == (n, 17, 1)
        assert torch.isfinite(batch["input"]).all() and batch["target"].max() <= 1.0
        assert set(batch["target_weight"].unique().tolist()) <= {0.0, 1.0}
        rotations += batch["meta"]["rotation"].tolist()
        flips += batch["meta"]["flipped"].tolist()
    assert any(r != 0 for r in rotations) and any(r == 0 for r in rotations)
    assert max(abs(r) for r in rotations) <= 90
    assert any(flips) and not all(flips)
    # The same (seed, epoch, index) draws the same sample; another epoch draws another.
    np.testing.assert_array_equal(dataset.sample(4)["input"], dataset.sample(4)["input"])
    first = dataset.sample(4)["meta"]["scale"]
    dataset.set_epoch(1)
    assert not np.array_equal(first, dataset.sample(4)["meta"]["scale"])
    # Optional per-joint weights multiply the target weights.
    weighted = CocoKeypointDataset(dataset.records, config, joint_weights=np.arange(17) + 1.0)
    plain = CocoKeypointDataset(dataset.records, config)
    np.testing.assert_allclose(weighted.sample(0)["target_weight"][:, 0],
                               plain.sample(0)["target_weight"][:, 0] * (np.arange(17) + 1))


def synthetic_coco(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """One 300x200 image with one person: left joints on the image's right half (x > 150), as a person facing
    the camera; left wrist labelled, right wrist not."""
    cv2.imwrite(str(tmp_path / "person.png"), np.full((200, 300, 3), 128, np.uint8))
    joints = np.array([[150, 40], [158, 35], [142, 35], [166, 38], [134, 38], [175, 70], [125, 70],
                       [185, 100], [115, 100], [190, 125], [0, 0], [165, 130], [135, 130], [166, 160],
                       [134, 160], [167, 190], [133, 190]], dtype=np.float64)
    visible = np.ones(17)
    visible[10] = 0
    keypoints = np.concatenate([joints, 2 * visible[:, None]], axis=1).reshape(-1).tolist()
    data = {"images": [{"id": 1, "file_name": "person.png", "width": 300, "height": 200}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 9000.0,
                             "bbox": [110, 30, 90, 165], "keypoints": keypoints, "num_keypoints": 16}],
            "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "person.json"
    path.write_text(json.dumps(data))
    return path, joints


def test_flip_mirrors_and_swaps_left_and_right(tmp_path) -> None:
    annotations, joints = synthetic_coco(tmp_path)
    config = get_config("tiny")
    records = load_person_records(annotations, tmp_path)
    plain = CocoKeypointDataset(records, config).sample(0)
    flip_only = Augmentation(scale_factor=0, rotation_prob=0, half_body_prob=0, flip_prob=1.0)
    flipped = CocoKeypointDataset(records, config, augmentation=flip_only).sample(0)
    assert flipped["meta"]["flipped"] and not plain["meta"]["flipped"]
    width = 48
    # Mirrored crop: heatmap x -> width - x, and the left channel now holds the right joint.
    for left, right in coco.FLIP_PAIRS:
        for a, b in ((left, right), (right, left)):
            if plain["target_weight"][b, 0] == 0:
                continue
            expected = plain["meta"]["joints_hm"][b] * [-1, 1] + [width, 0]
            np.testing.assert_allclose(flipped["meta"]["joints_hm"][a], expected, atol=1e-4)
    # The right wrist (10) is unlabelled: after the flip the left-wrist channel (9) is empty, weight 0.
    assert flipped["target_weight"][9, 0] == 0 and not flipped["target"][9].any()
    assert flipped["target_weight"][10, 0] == 1 and plain["target_weight"][10, 0] == 0
    # A person facing the camera shows the left shoulder on the image's right; so does their mirror image,
    # because the flip also relabels the joints (without the swap it would jump to the left).
    assert plain["meta"]["joints_hm"][5][0] > width / 2 and flipped["meta"]["joints_hm"][5][0] > width / 2
    # fliplr_joints itself: x -> W - 1 - x, pairs swapped, unlabelled joints zeroed as official.
    mirrored, vis = fliplr_joints(joints, records[0].visible, 300, coco.FLIP_PAIRS)
    np.testing.assert_array_equal(mirrored[6], [300 - 1 - 175, 70])
    assert vis[9] == 0 and vis[10] == 1 and (mirrored[9] == 0).all()


def test_half_body_picks_the_upper_or_lower_joints(tmp_path) -> None:
    annotations, joints = synthetic_coco(tmp_path)
    visible = load_person_records(annotations, tmp_path)[0].visible
    labelled = visible > 0
    upper = [j for j in UPPER_BODY_JOINTS if labelled[j]]
    lower = [j for j in range(11, 17) if labelled[j]]
    picked = set()
    for seed in range(40):
        center, scale = half_body_center_scale(joints, visible, 0.75, np.random.default_rng(seed))
        for name, subset in (("upper", upper), ("lower", lower)):
            if np.allclose(center, joints[subset].mean(axis=0), atol=1e-4):
                picked.add(name)
                points = joints[subset]
                height = max(np.ptp(points[:, 1]), np.ptp(points[:, 0]) / 0.75)
                np.testing.assert_allclose(scale, [height * 0.75 / 200 * 1.5, height / 200 * 1.5], rtol=1e-5)
                break
        else:
            pytest.fail(f"half-body center {center} is neither the upper nor the lower joints' mean")
    assert picked == {"upper", "lower"}
    # Too few labelled joints in both halves: no half body.
    few = np.zeros(17)
    few[[0, 12]] = 1
    assert half_body_center_scale(joints, few, 0.75, np.random.default_rng(0)) is None
    # In the dataset (p = 1; only persons with more than 8 labelled joints): a smaller crop than the full box.
    records = load_person_records(annotations, tmp_path)
    half_only = Augmentation(scale_factor=0, rotation_prob=0, flip=False, half_body_prob=1.0)
    sample = CocoKeypointDataset(records, get_config("tiny"), augmentation=half_only).sample(0)
    assert sample["meta"]["scale"][1] < records[0].scale[1]
    assert any(np.allclose(sample["meta"]["center"], joints[subset].mean(axis=0), atol=1e-4)
               for subset in (upper, lower))
