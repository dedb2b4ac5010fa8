"""posecore.geometry against the official HRNet fixtures (../shared/reference/affine_cases.npz)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from posecore.coco import IMAGENET_MEAN, IMAGENET_STD
from posecore.geometry import (
    boxes_to_centers_scales,
    crop_person,
    get_affine_transform,
    heatmap_to_image,
    normalize_crops,
    xyxy_to_xywh,
)


def box_to_center_scale(box_xywh, aspect_ratio: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """One box through the vectorised form: the official _box2cs takes one box at a time."""
    centers, scales = boxes_to_centers_scales(np.asarray(box_xywh, dtype=np.float64)[None, :4], aspect_ratio)
    return centers[0], scales[0]


# Matrices built the official way (float32 points, cv2.getAffineTransform) come out bit-identical; the
# tolerance only leaves room for a different OpenCV build's linear solver.
MATRIX_ATOL = 1e-6

MATRIX_FIXTURES = [
    # (array, output size w/h, inverse)
    ("trans_input_192x256", (192, 256), False),
    ("trans_inv_heatmap_48x64", (48, 64), True),
    ("trans_fwd_heatmap_48x64", (48, 64), False),
    ("trans_inv_input_192x256", (192, 256), True),
    ("trans_input_288x384", (288, 384), False),
    ("trans_inv_heatmap_72x96", (72, 96), True),
]


@pytest.fixture
def affine(reference_npz):
    return reference_npz("affine_cases.npz")


def test_box_to_center_scale_matches_every_case(affine):
    boxes = affine["boxes_xywh"]
    for i, box in enumerate(boxes):
        # The fixture called the official _box2cs with Python floats.
        center, scale = box_to_center_scale([float(v) for v in box], aspect_ratio=192 / 256)
        assert center.dtype == np.float32 and scale.dtype == np.float32
        np.testing.assert_array_equal(center, affine["center"][i], err_msg=str(affine["labels"][i]))
        np.testing.assert_array_equal(scale, affine["scale"][i], err_msg=str(affine["labels"][i]))


def test_boxes_to_centers_scales_is_the_vectorised_form(affine):
    centers, scales = boxes_to_centers_scales(affine["boxes_xywh"], aspect_ratio=0.75)
    np.testing.assert_array_equal(centers, affine["center"])
    np.testing.assert_array_equal(scales, affine["scale"])


def test_center_x_minus_one_skips_padding_like_the_official_code(affine):
    assert "center x == -1" in str(affine["labels"][20])
    center, scale = box_to_center_scale(affine["boxes_xywh"][20])
    assert center[0] == -1
    *_, w, h = affine["boxes_xywh"][20]
    assert w < 0.75 * h  # a tall box: the width grows to 0.75 h, and no x1.25 padding follows
    np.testing.assert_array_equal(scale, np.float32([0.75 * h / 200, h / 200]))


@pytest.mark.parametrize("name,size,inverse", MATRIX_FIXTURES)
def test_affine_matrices_match_all_32_cases(affine, name, size, inverse):
    expected = affine[name]
    for i in range(len(expected)):
        got = get_affine_transform(affine["center"][i], affine["scale"][i], size, inverse=inverse)
        assert got.shape == (2, 3) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected[i], rtol=0, atol=MATRIX_ATOL, err_msg=f"case {i}")


def test_zero_size_box_gives_the_official_singular_matrices(affine):
    assert "zero size" in str(affine["labels"][21])
    forward = get_affine_transform(affine["center"][21], affine["scale"][21], (48, 64))
    inverse = get_affine_transform(affine["center"][21], affine["scale"][21], (48, 64), inverse=True)
    np.testing.assert_array_equal(forward, np.zeros((2, 3)))
    np.testing.assert_array_equal(inverse, affine["trans_inv_heatmap_48x64"][21])


def test_float32_rounding_of_large_coordinates_is_reproduced(affine):
    # Case 23: centers around 1e6 lose precision in the official float32 points; a float64 closed form
    # would not reproduce the rounding, so the match must be exact.
    for name, size, inverse in MATRIX_FIXTURES:
        got = get_affine_transform(affine["center"][23], affine["scale"][23], size, inverse=inverse)
        np.testing.assert_array_equal(got, affine[name][23])


def test_only_scale_x_sets_the_matrix(affine):
    for i in range(2):
        got = get_affine_transform(
            affine["inconsistent_center"][i], affine["inconsistent_scale"][i], (48, 64), inverse=True
        )
        np.testing.assert_allclose(got, affine["inconsistent_trans_inv_48x64"][i], atol=MATRIX_ATOL)
    assert np.array_equal(
        get_affine_transform([100, 100], np.float32([1, 3]), (48, 64)),
        get_affine_transform([100, 100], np.float32([1, 0.1]), (48, 64)),
    )


def test_heatmap_to_image_matches_transform_preds(affine):
    points = np.broadcast_to(affine["heatmap_points"], (32, 8, 2))
    got = heatmap_to_image(points, affine["center"], affine["scale"], (48, 64))
    # The official code applies each matrix with np.dot (BLAS, which may fuse multiply-adds); the
    # vectorised product here can differ in the last float64 bit (~1e-16 relative), nothing more.
    np.testing.assert_allclose(got, affine["transform_preds_48x64"], rtol=1e-12, atol=1e-9)


def test_crops_match_the_official_crop(affine):
    image = affine["synthetic_image_rgb"]
    same_major = str(affine["opencv_version"]).split(".")[0] == cv2.__version__.split(".")[0]
    for i in range(len(affine["crop_boxes_xywh"])):
        center, scale = box_to_center_scale(affine["crop_boxes_xywh"][i])
        np.testing.assert_array_equal(center, affine["crop_center"][i])
        np.testing.assert_array_equal(scale, affine["crop_scale"][i])
        crop = crop_person(image, center, scale, (192, 256))
        expected = affine["crops_192x256"][i]
        assert crop.shape == (256, 192, 3) and crop.dtype == np.uint8
        if same_major:
            np.testing.assert_array_equal(crop, expected)
        else:  # bilinear rounding may differ by one level across OpenCV versions
            assert np.abs(crop.astype(int) - expected.astype(int)).max() <= 1


def test_crop_accepts_a_read_only_image_like_decode_image_returns(affine):
    image = affine["synthetic_image_rgb"].copy()
    expected = crop_person(image, affine["crop_center"][0], affine["crop_scale"][0], (192, 256))
    image.flags.writeable = False
    got = crop_person(image, affine["crop_center"][0], affine["crop_scale"][0], (192, 256))
    np.testing.assert_array_equal(got, expected)


def test_normalize_crops_equals_the_torchvision_formula():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 16, 12, 3), dtype=np.uint8)
    crops[0, 0, 0] = (0, 128, 255)
    got = normalize_crops(crops, IMAGENET_MEAN, IMAGENET_STD)
    # ToTensor then Normalize, in float32, NHWC -> NCHW.
    x = crops.astype(np.float32) / np.float32(255.0)
    expected = ((x - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)).transpose(0, 3, 1, 2)
    assert got.dtype == np.float32 and got.shape == (3, 3, 16, 12) and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got, expected)  # the look-up table is built with the same formula


def test_normalize_crops_bgr_reverses_channels_and_their_statistics():
    crops = np.random.default_rng(1).integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    rgb = normalize_crops(crops, IMAGENET_MEAN, IMAGENET_STD)
    bgr = normalize_crops(crops, IMAGENET_MEAN, IMAGENET_STD, bgr=True)
    np.testing.assert_array_equal(bgr, rgb[:, ::-1])


def test_normalize_crops_handles_a_non_contiguous_batch_and_rejects_floats():
    crops = np.random.default_rng(2).integers(0, 256, size=(4, 6, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        normalize_crops(crops[::2], IMAGENET_MEAN, IMAGENET_STD),
        normalize_crops(crops, IMAGENET_MEAN, IMAGENET_STD)[::2],
    )
    with pytest.raises(ValueError):
        normalize_crops(crops.astype(np.float32), IMAGENET_MEAN, IMAGENET_STD)


def test_xyxy_to_xywh_keeps_extra_columns():
    got = xyxy_to_xywh(np.array([[10, 20, 110, 220, 0.9]]))
    np.testing.assert_array_equal(got, [[10, 20, 100, 200, 0.9]])
