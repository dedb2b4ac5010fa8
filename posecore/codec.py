"""The pose codec: the official HRNet test pipeline around the network, pure and synchronous.

    decoded image + boxes -> center/scale -> affine crops -> normalised input (+ mirrored for the flip test)
    heatmaps -> flip-test average -> argmax + quarter-pixel -> inverse affine -> rescored persons

No threads, no batcher, no globals: serving (service/serving.py), evaluation, training validation and the bench
all run these same two calls, so they cannot drift apart. Time, queues and metrics belong to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecore import geometry, heatmaps
from posecore.boxes import fit_to_image
from posecore.modelcard import ModelCard


@dataclass
class Prepared:
    """One image's persons, cropped and normalised, ready for the network."""

    image_wh: tuple[int, int]
    boxes: np.ndarray  # (N, 4) xywh, image pixels
    box_scores: np.ndarray  # (N,)
    centers: np.ndarray  # (N, 2) float32
    scales: np.ndarray  # (N, 2) float32
    inputs: np.ndarray  # (N or 2N, 3, h, w) float32; the mirrored crops follow the originals
    flip: bool


@dataclass
class PersonPose:
    box: np.ndarray  # (4,) xywh
    box_score: float
    score: float  # official rescoring: box score x mean of keypoint scores above 0.2
    keypoints: np.ndarray  # (K, 3): x, y, score in image pixels


class PoseCodec:
    """Crops for, and keypoints from, the model that `card` describes."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.input_wh = (card.input.width, card.input.height)
        self.aspect_ratio = card.input.width / card.input.height
        self.flip_pairs = card.flip_pairs

    def crops(self, image_rgb: np.ndarray, boxes: np.ndarray, flip: bool) -> Prepared:
        """RGB uint8 (H, W, 3) and parsed boxes (N, 5: x, y, w, h, score; see posecore.boxes) -> network input.

        Raises PoseError invalid_boxes for boxes that do not fit the image.
        """
        height, width = image_rgb.shape[:2]
        xywh, box_scores = fit_to_image(boxes, (width, height))
        centers, scales = geometry.boxes_to_centers_scales(xywh, aspect_ratio=self.aspect_ratio)
        inputs = self._normalised_crops(image_rgb, centers, scales, flip)
        return Prepared((width, height), xywh, box_scores, centers, scales, inputs, flip)

    def _normalised_crops(self, image: np.ndarray, centers: np.ndarray, scales: np.ndarray,
                          flip: bool) -> np.ndarray:
        width, height = self.input_wh
        if len(centers) == 0:
            return np.zeros((0, 3, height, width), np.float32)
        crops = np.stack([geometry.crop_person(image, c, s, self.input_wh)
                          for c, s in zip(centers, scales, strict=True)])
        spec = self.card.input
        inputs = geometry.normalize_crops(crops, spec.mean, spec.std, spec.value_scale, bgr=spec.color_order == "BGR")
        if flip:  # the official flip test mirrors the normalised input tensor (input.flip(3))
            inputs = np.concatenate([inputs, inputs[..., ::-1]])
        return inputs

    def persons(self, prepared: Prepared, maps: np.ndarray) -> list[PersonPose]:
        """The network's heatmaps for `prepared.inputs` -> one PersonPose per box, in image pixels."""
        n = len(prepared.boxes)
        if n == 0:
            return []
        if prepared.flip:
            maps = heatmaps.flip_test_average(maps[:n], maps[n:], self.flip_pairs, shift=True)
        coords, maxvals = heatmaps.decode_heatmaps(maps, prepared.centers, prepared.scales)
        persons = []
        for i in range(n):
            keypoints = np.concatenate([coords[i], maxvals[i]], axis=1)
            box_score = float(prepared.box_scores[i])
            persons.append(PersonPose(prepared.boxes[i], box_score, heatmaps.rescore_person(box_score, maxvals[i]),
                                      keypoints))
        return persons
