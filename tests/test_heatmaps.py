"""posecore.heatmaps against the official HRNet fixtures (decode_cases, flip_cases, tiny_forward)."""

from __future__ import annotations

import numpy as np
import pytest

from posecore.coco import FLIP_PAIRS, OKS_SIGMAS
from posecore.heatmaps import (
    decode_heatmaps,
    flip_back,
    flip_test_average,
    gaussian_heatmaps,
    get_max_preds,
    oks_nms,
    refine_quarter_pixel,
    rescore_person,
)

NUM_DECODE_CASES = 21


@pytest.fixture
def decode_cases(reference_npz):
    return reference_npz("decode_cases.npz")


@pytest.mark.parametrize("case", range(NUM_DECODE_CASES))
def test_decode_cases_match_the_official_decoder_bit_for_bit(decode_cases, case):
    k = f"{case:02d}"
    heatmaps = decode_cases[f"heatmaps_{k}"]
    name = str(decode_cases["case_names"][case])

    coords, maxvals = get_max_preds(heatmaps)
    assert coords.dtype == np.float32 and maxvals.dtype == np.float32
    np.testing.assert_array_equal(coords, decode_cases[f"max_preds_{k}"], err_msg=name)
    np.testing.assert_array_equal(maxvals, decode_cases[f"max_vals_{k}"], err_msg=name)

    refined = refine_quarter_pixel(heatmaps, coords)
    np.testing.assert_array_equal(refined, decode_cases[f"refined_hm_coords_{k}"], err_msg=name)

    preds, final_maxvals = decode_heatmaps(heatmaps, decode_cases[f"center_{k}"], decode_cases[f"scale_{k}"])
    assert preds.dtype == np.float32 and preds.shape == coords.shape
    np.testing.assert_array_equal(preds, decode_cases[f"final_preds_{k}"], err_msg=name)
    np.testing.assert_array_equal(final_maxvals, decode_cases[f"final_maxvals_{k}"], err_msg=name)


def test_identity_center_scale_decodes_to_heatmap_coordinates(decode_cases):
    # The fixture's refined_hm_coords came from get_final_preds with center (W/2, H/2), scale W/200.
    for case in range(NUM_DECODE_CASES):
        k = f"{case:02d}"
        heatmaps = decode_cases[f"heatmaps_{k}"]
        n, _, h, w = heatmaps.shape
        centers = np.tile(np.float32([w / 2, h / 2]), (n, 1))
        scales = np.tile(np.float32([w / 200, w / 200]), (n, 1))
        preds, _ = decode_heatmaps(heatmaps, centers, scales)
        np.testing.assert_array_equal(preds, decode_cases[f"refined_hm_coords_{k}"])


def test_decoding_no_persons_gives_empty_arrays():
    preds, maxvals = decode_heatmaps(np.zeros((0, 17, 64, 48), np.float32), np.zeros((0, 2)), np.zeros((0, 2)))
    assert preds.shape == (0, 17, 2) and maxvals.shape == (0, 17, 1)


def test_refinement_boundary_is_asymmetric_like_the_official_code():
    heatmaps = np.zeros((1, 4, 64, 48), np.float32)
    for joint, (x, y) in enumerate([(1, 30), (46, 30), (20, 1), (20, 62)]):
        heatmaps[0, joint, y, x] = 1.0
        heatmaps[0, joint, y, x + 1 if x + 1 < 48 else x - 1] = 0.5
        heatmaps[0, joint, y + 1 if y + 1 < 64 else y - 1, x] = 0.5
    coords, _ = get_max_preds(heatmaps)
    refined = refine_quarter_pixel(heatmaps, coords)
    np.testing.assert_array_equal(refined[0, 0], [1, 30])  # px == 1: not refined
    np.testing.assert_array_equal(refined[0, 1], [46.25, 30.25])  # px == W-2: refined
    np.testing.assert_array_equal(refined[0, 2], [20, 1])  # py == 1: not refined
    np.testing.assert_array_equal(refined[0, 3], [20.25, 62.25])  # py == H-2: refined


@pytest.fixture
def flip_cases(reference_npz):
    return reference_npz("flip_cases.npz")


def test_flip_back_matches_and_leaves_its_input_alone(flip_cases):
    flipped = flip_cases["heatmaps_of_flipped_input"].copy()
    back = flip_back(flipped, flip_cases["flip_pairs"])
    np.testing.assert_array_equal(back, flip_cases["flip_back"])
    np.testing.assert_array_equal(flipped, flip_cases["heatmaps_of_flipped_input"])
    assert back.flags.c_contiguous
    assert np.array_equal(np.asarray(FLIP_PAIRS), flip_cases["flip_pairs"])


def test_flip_test_average_matches_validate(flip_cases):
    heatmaps, flipped = flip_cases["heatmaps"], flip_cases["heatmaps_of_flipped_input"]
    averaged = flip_test_average(heatmaps, flipped, FLIP_PAIRS, shift=True)
    assert averaged.dtype == np.float32
    np.testing.assert_array_equal(averaged, flip_cases["averaged"])
    no_shift = flip_test_average(heatmaps, flipped, FLIP_PAIRS, shift=False)
    np.testing.assert_array_equal(no_shift, flip_cases["averaged_no_shift"])
    # The shifted flip-back is what the average adds: recover it and compare.
    shifted = averaged * 2 - heatmaps
    np.testing.assert_allclose(shifted, flip_cases["flip_back_shifted"], atol=1e-6)


def test_validate_all_preds_end_to_end(flip_cases):
    averaged = flip_test_average(flip_cases["heatmaps"], flip_cases["heatmaps_of_flipped_input"], FLIP_PAIRS)
    preds, maxvals = decode_heatmaps(averaged, flip_cases["center"], flip_cases["scale"])
    np.testing.assert_array_equal(np.concatenate([preds, maxvals], axis=2), flip_cases["validate_all_preds"])


def test_tiny_model_outputs_decode_like_validate(reference_npz):
    tiny = reference_npz("tiny_forward.npz")
    averaged = flip_test_average(tiny["output"], tiny["output_of_flipped_input"], FLIP_PAIRS)
    np.testing.assert_array_equal(averaged, tiny["flip_test_averaged"])
    preds, maxvals = decode_heatmaps(averaged, tiny["center"], tiny["scale"])
    np.testing.assert_array_equal(np.concatenate([preds, maxvals], axis=2), tiny["final_preds_flip_test"])
    preds, maxvals = decode_heatmaps(tiny["output"], tiny["center"], tiny["scale"])
    np.testing.assert_array_equal(preds, tiny["final_preds_no_flip"])
    np.testing.assert_array_equal(maxvals, tiny["final_maxvals_no_flip"])


def test_rescore_person_uses_confident_keypoints_only():
    maxvals = np.array([0.9, 0.5, 0.1, 0.2, 0.7], np.float32)[:, None]
    # float32 0.2 is not > 0.2: the official code compares in the scores' own dtype.
    assert rescore_person(0.8, maxvals) == pytest.approx(0.8 * (0.9 + 0.5 + 0.7) / 3)
    assert rescore_person(1.0, np.full((17, 1), 0.1)) == 0.0  # none confident: official mean is 0
    assert rescore_person(0.5, np.ones((17, 1)), threshold=0.99) == pytest.approx(0.5)


def _person(offset: float, score: float, area: float = 10000.0) -> dict:
    grid = np.stack([np.linspace(0, 80, 17), np.linspace(0, 160, 17), np.ones(17)], axis=1)
    grid[:, :2] += offset
    return {"keypoints": grid, "area": area, "score": score}


def test_oks_nms_drops_duplicates_and_keeps_distinct_persons():
    persons = [_person(0, 0.7), _person(1, 0.9), _person(300, 0.8), _person(2, 0.95)]
    assert oks_nms(persons, threshold=0.9) == [3, 2]  # best first; 0 and 1 duplicate person 3
    assert oks_nms([], 0.9) == []


def test_oks_nms_threshold_is_the_official_oks():
    a, b = _person(0, 0.9), _person(3, 0.8)
    # Every joint is 3*sqrt(2) px off; official OKS = mean exp(-d^2 / (2 sigma)^2 / area / 2), sigma = table/10.
    variances = (np.asarray(OKS_SIGMAS) / 10 * 2) ** 2
    oks = np.mean(np.exp(-(18.0 / variances / (10000.0 + np.spacing(1)) / 2)))
    assert oks_nms([a, b], threshold=oks + 1e-9) == [0, 1]
    assert oks_nms([a, b], threshold=oks - 1e-9) == [0]


def test_gaussian_target_round_trips_through_argmax():
    rng = np.random.default_rng(0)
    keypoints = rng.uniform([0, 0], [47, 63], size=(17, 2))
    target, weight = gaussian_heatmaps(keypoints, (48, 64), sigma=2.0)
    assert target.shape == (17, 64, 48) and target.dtype == np.float32
    assert weight.shape == (17,) and weight.dtype == np.float32 and np.all(weight == 1)
    coords, maxvals = get_max_preds(target[None])
    assert np.all(np.abs(coords[0] - keypoints) <= 0.5 + 1e-6)  # integer center int(x + 0.5)
    np.testing.assert_array_equal(maxvals, 1.0)


def test_gaussian_target_values_and_weights():
    keypoints = np.array(
        [[10.4, 20.6], [1.2, 62.7], [47.4, 0.4], [100, 5], [5, -10], [-7.6, 30], [30, 30]], dtype=np.float64
    )
    visible = np.array([1, 2, 1, 1, 1, 1, 0])  # COCO v=2 counts as visible
    target, weight = gaussian_heatmaps(keypoints, (48, 64), sigma=2.0, visible=visible)
    ys, xs = np.mgrid[0:64, 0:48]
    for joint, (mu_x, mu_y) in enumerate([(10, 21), (1, 63), (47, 0)]):  # int(x + 0.5)
        expected = np.exp(-((xs - mu_x) ** 2 + (ys - mu_y) ** 2) / 8.0)
        expected[(np.abs(xs - mu_x) > 6) | (np.abs(ys - mu_y) > 6)] = 0  # cut to radius 3 sigma
        np.testing.assert_allclose(target[joint], expected, rtol=1e-6, atol=0)
    # off the map, off the map, edge quirk, invisible
    np.testing.assert_array_equal(weight, [1, 1, 1, 0, 0, 1, 0])
    # x = -7.6 -> mu = int(-7.1) = -7 (truncation), so the square ends exactly at column 0: empty map, but
    # the official check (br < 0) keeps weight 1.
    assert not target[3:].any()
