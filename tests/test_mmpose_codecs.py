"""posecore.codecs against mmpose 1.x's own functions (tests/fixtures/mmpose/mmpose_reference.npz, made by
make_fixtures.py beside it): MSRAHeatmap, DARK and UDP, bit for bit, with negative controls that show the comparison
can fail (a changed blur kernel or UDP scaling no longer matches)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posecore.coco import FLIP_PAIRS
from posecore.codec import PoseCodec
from posecore.codecs import affine, pipelines, refine
from posecore.codecs.spec import Pipeline
from posecore.heatmaps import flip_test_average
from posecore.modelcard import InputSpec, ModelCard, OutputSpec, WeightsInfo

FIXTURE = Path(__file__).parent / "fixtures/mmpose/mmpose_reference.npz"
VARIANTS = {"msra": Pipeline("msra", True), "dark": Pipeline("dark", True), "dark17": Pipeline("dark", True, 17),
            "udp": Pipeline("udp", False)}
CASES = (0, 1)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


def _case(ref, case):
    key = f"case{case}_"
    input_wh = tuple(int(v) for v in ref[key + "input_wh"])
    return key, input_wh, ref[key + "boxes_xywh"]


def _maps(ref, key):
    return ref[key + "heatmaps"].astype(np.float32), ref[key + "heatmaps_of_flipped"].astype(np.float32)


def _decode(ref, case, name, flip, pipeline):
    key, input_wh, boxes = _case(ref, case)
    maps, flipped = _maps(ref, key)
    centers, scales = affine.boxes_to_centers_scales(boxes, input_wh)
    if flip:
        maps = flip_test_average(maps, flipped, FLIP_PAIRS, shift=pipeline.shift_heatmap)
    return pipelines.keypoints(maps, centers, scales, pipeline, input_wh)


def _expected(ref, case, name, flip):
    tag = f"case{case}_{name}_{'flip' if flip else 'plain'}"
    return ref[tag + "_keypoints"], ref[tag + "_scores"]


# -- each step alone --------------------------------------------------------------------------------------------
def test_heatmap_maximum_puts_non_positive_maxima_at_minus_one(ref):
    maps = ref["unit_heatmaps"].astype(np.float32)[None]
    locations, values = refine.heatmap_maximum(maps)
    np.testing.assert_array_equal(locations[0], ref["unit_max_locations"])
    np.testing.assert_array_equal(values[0], ref["unit_max_values"])
    assert (locations[0][values[0] <= 0] == -1).all() and (values[0] <= 0).any()  # the case is in the fixture


@pytest.mark.parametrize("kernel", [11, 17])
def test_blur_of_all_maps_at_once_matches_mmpose_per_map(ref, kernel):
    maps = ref["unit_heatmaps"].astype(np.float32)[None]
    np.testing.assert_array_equal(refine.gaussian_blur(maps, kernel)[0], ref[f"unit_blur{kernel}"])


def test_blur_of_realistic_64x48_maps_matches_mmpose(ref):
    maps = ref["case1_heatmaps"].astype(np.float32)
    np.testing.assert_array_equal(refine.gaussian_blur(maps, 11)[0], ref["unit_blur11_64x48"])


def test_udp_reads_what_mmpose_reads_for_a_joint_without_a_maximum(ref):
    """Person 1's joint 0 has no positive maximum: mmpose's flat index -1 wraps to that person's last map."""
    maps = ref["case0_heatmaps"].astype(np.float32)
    locations, values = refine.heatmap_maximum(maps)
    assert values[1, 0] <= 0 and (locations[1, 0] == -1).all()
    keypoints, _ = _decode(ref, 0, "udp", False, VARIANTS["udp"])
    np.testing.assert_array_equal(keypoints[1, 0], _expected(ref, 0, "udp", False)[0][1, 0])


def test_blur_of_many_persons_equals_each_person_alone(ref):
    maps = np.concatenate([ref["case0_heatmaps"], ref["case0_heatmaps_of_flipped"]]).astype(np.float32)
    together = refine.gaussian_blur(maps, 11)
    for i in range(len(maps)):
        np.testing.assert_array_equal(together[i], refine.gaussian_blur(maps[i:i + 1], 11)[0])


def test_refinements_match_mmpose(ref):
    maps = ref["unit_heatmaps"].astype(np.float32)[None]
    locations = ref["unit_max_locations"][None]
    np.testing.assert_array_equal(refine.refine_msra(locations, maps)[0], ref["unit_refine_msra"])
    np.testing.assert_array_equal(refine.refine_dark(locations, maps, 11)[0], ref["unit_refine_dark"])
    np.testing.assert_array_equal(refine.refine_dark_udp(locations, maps, 11)[0], ref["unit_refine_dark_udp"])
    moved = ref["unit_refine_dark"] != ref["unit_max_locations"]
    assert moved.any(axis=1).sum() >= 3  # DARK really moved joints: the comparison is not of untouched maxima


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("udp", [False, True])
def test_box_to_crop_matches_topdown_affine(ref, case, udp):
    key, input_wh, boxes = _case(ref, case)
    tag = "udp" if udp else "std"
    centers, scales = affine.boxes_to_centers_scales(boxes, input_wh)
    np.testing.assert_array_equal(centers, ref[f"{key}{tag}_centers"])
    np.testing.assert_array_equal(scales, ref[f"{key}{tag}_scales"])
    matrices = affine.warp_matrices(centers, scales, input_wh, udp=udp)
    assert matrices.dtype == ref[f"{key}{tag}_matrices"].dtype
    np.testing.assert_array_equal(matrices, ref[f"{key}{tag}_matrices"])
    if f"{key}{tag}_crops" in ref:
        np.testing.assert_array_equal(affine.crop_persons(ref[key + "image"], matrices, input_wh),
                                      ref[f"{key}{tag}_crops"])


@pytest.mark.parametrize("shift", [True, False])
def test_flip_average_matches_flip_heatmaps_with_and_without_shift(ref, shift):
    maps, flipped = _maps(ref, "case0_")
    averaged = flip_test_average(maps, flipped, FLIP_PAIRS, shift=shift)[:2]
    np.testing.assert_array_equal(averaged, ref["case0_averaged_" + ("shift" if shift else "noshift")])


# -- whole pipelines: heatmaps -> image pixels -----------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("flip", [False, True])
def test_pipeline_matches_mmpose_bit_for_bit(ref, case, name, flip):
    keypoints, scores = _decode(ref, case, name, flip, VARIANTS[name])
    expected_keypoints, expected_scores = _expected(ref, case, name, flip)
    assert keypoints.dtype == expected_keypoints.dtype  # float32 for MSRA/DARK, float64 for UDP, as mmpose
    np.testing.assert_array_equal(keypoints, expected_keypoints)
    np.testing.assert_array_equal(scores, expected_scores)


# -- negative controls: the comparison notices a wrong parameter -----------------------------------------------
@pytest.mark.parametrize("name, wrong", [("dark", Pipeline("dark", True, 9)), ("dark17", Pipeline("dark", True, 11)),
                                         ("udp", Pipeline("udp", False, 13))])
def test_a_different_blur_kernel_no_longer_matches(ref, name, wrong):
    keypoints, _ = _decode(ref, 0, name, True, wrong)
    assert not np.array_equal(keypoints, _expected(ref, 0, name, True)[0])


def test_flip_shift_matters(ref):
    keypoints, _ = _decode(ref, 0, "udp", True, Pipeline("udp", True))
    assert not np.array_equal(keypoints, _expected(ref, 0, "udp", True)[0])


def test_udp_scaling_by_size_instead_of_size_minus_one_no_longer_matches(ref, monkeypatch):
    monkeypatch.setattr(refine, "udp_to_input", refine.msra_to_input)
    keypoints, _ = _decode(ref, 0, "udp", False, VARIANTS["udp"])
    assert not np.array_equal(keypoints, _expected(ref, 0, "udp", False)[0])


def test_udp_warp_without_the_minus_one_no_longer_matches(ref):
    key, input_wh, boxes = _case(ref, 0)
    centers, scales = affine.boxes_to_centers_scales(boxes, input_wh)
    wrong = affine.udp_warp_matrices(centers, scales, (input_wh[0] + 1, input_wh[1] + 1))
    assert not np.array_equal(wrong, ref[key + "udp_matrices"])


def test_an_all_zero_heatmap_keeps_its_maximum_instead_of_nan():
    maps = np.zeros((1, 17, 32, 24), np.float32)
    maps[0, 1:, 10, 12] = 1.0
    centers, scales = np.array([[50.0, 60.0]], np.float32), np.array([[96.0, 128.0]], np.float32)
    for pipeline in (VARIANTS["dark"], VARIANTS["udp"]):
        keypoints, _ = pipelines.keypoints(maps, centers, scales, pipeline, (96, 128))
        assert np.isfinite(keypoints).all()


# -- the pose codec serves a codec card as mmpose does ----------------------------------------------------------
def _card(codec: dict | None, input_wh=(96, 128), heatmap_wh=(24, 32)) -> ModelCard:
    return ModelCard(name="t", arch="t", trained=True, input=InputSpec(width=input_wh[0], height=input_wh[1]),
                     output=OutputSpec(width=heatmap_wh[0], height=heatmap_wh[1]), weights=WeightsInfo(source="t"),
                     codec=codec)


@pytest.mark.parametrize("codec, name", [({"type": "MSRAHeatmap"}, "msra"),
                                         ({"type": "MSRAHeatmap", "unbiased": True, "blur_kernel_size": 11}, "dark"),
                                         ({"type": "MSRAHeatmap", "unbiased": True, "blur_kernel_size": 17},
                                          "dark17"),
                                         ({"type": "UDPHeatmap", "blur_kernel_size": 11}, "udp")])
def test_pose_codec_serves_the_card_codec_end_to_end(ref, codec, name):
    key, _input_wh, boxes = _case(ref, 0)
    poser = PoseCodec(_card(codec))
    rows = np.concatenate([boxes.astype(np.float64), np.ones((len(boxes), 1))], axis=1)
    prepared = poser.crops(ref[key + "image"], rows, flip=True)
    crops = ref[key + ("udp" if name == "udp" else "std") + "_crops"]
    spec = poser.card.input
    from posecore.geometry import normalize_crops
    np.testing.assert_array_equal(prepared.inputs[:len(boxes)], normalize_crops(crops, spec.mean, spec.std))
    maps, flipped = _maps(ref, key)
    persons = poser.persons(prepared, np.concatenate([maps, flipped]))
    expected_keypoints, expected_scores = _expected(ref, 0, name, True)
    np.testing.assert_array_equal(np.stack([p.keypoints[:, :2] for p in persons]), expected_keypoints)
    np.testing.assert_array_equal(np.stack([p.keypoints[:, 2] for p in persons]), expected_scores)


def test_a_request_may_choose_another_decoding_the_card_allows(ref):
    key, _input_wh, boxes = _case(ref, 0)
    poser = PoseCodec(_card(None))
    rows = np.concatenate([boxes.astype(np.float64), np.ones((len(boxes), 1))], axis=1)
    prepared = poser.crops(ref[key + "image"], rows, flip=False, decoding="dark")
    assert prepared.pipeline == Pipeline("dark", True, 11)
    persons = poser.persons(prepared, _maps(ref, key)[0])
    np.testing.assert_array_equal(np.stack([p.keypoints[:, :2] for p in persons]),
                                  _expected(ref, 0, "dark", False)[0])
