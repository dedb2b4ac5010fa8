"""The pose codec: the test-time pipeline around the network, pure and synchronous.

    decoded image + boxes -> center/scale -> affine crops -> normalised input (+ mirrored for the flip test)
    heatmaps -> flip-test average -> argmax + refinement -> back to image pixels -> rescored persons

The pipeline is the official HRNet one (posecore.geometry / posecore.heatmaps) unless the model card's `codec`
names mmpose's MSRAHeatmap, DARK or UDP (posecore.codecs), and a request may pick another one the card allows.

No threads, no batcher, no globals: serving (service/serving.py), evaluation, training validation and the bench
all run these same two calls, so they cannot drift apart. Time, queues and metrics belong to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecore import geometry, heatmaps
from posecore.boxes import fit_to_image
from posecore.codecs import pipelines
from posecore.codecs.spec import Pipeline, allowed_decodings, resolve_pipeline
from posecore.modelcard import ModelCard

OFFICIAL = Pipeline("official")


@dataclass
class Prepared:
    """One image's persons, cropped and normalised, ready for the network."""

    image_wh: tuple[int, int]
    boxes: np.ndarray  # (N, 4) xywh, image pixels
    box_scores: np.ndarray  # (N,)
    centers: np.ndarray  # (N, 2) float32
    scales: np.ndarray  # (N, 2) float32: official, in units of 200 px; mmpose pipelines: pixels
    inputs: np.ndarray  # (N or 2N, 3, h, w) float32; the mirrored crops follow the originals
    flip: bool
    pipeline: Pipeline = OFFICIAL  # the decoding that made the crops and will read their heatmaps


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
        self.allowed_decodings = allowed_decodings(card.codec)

    def pipeline(self, decoding: str | None = None) -> Pipeline:
        """The card's pipeline, or `decoding` where the card allows it (else PoseError invalid_request)."""
        return resolve_pipeline(self.card.codec, decoding)

    def crops(self, image_rgb: np.ndarray, boxes: np.ndarray, flip: bool, decoding: str | None = None) -> Prepared:
        """RGB uint8 (H, W, 3) and parsed boxes (N, 5: x, y, w, h, score; see posecore.boxes) -> network input.

        Raises PoseError invalid_boxes for boxes that do not fit the image, invalid_request for a decoding the
        card does not allow.
        """
        pipeline = self.pipeline(decoding)
        height, width = image_rgb.shape[:2]
        xywh, box_scores = fit_to_image(boxes, (width, height))
        if len(xywh) == 0:
            centers = scales = np.zeros((0, 2), np.float32)
            crops = np.zeros((0, self.input_wh[1], self.input_wh[0], 3), np.uint8)
        elif pipeline.crop == "official":
            centers, scales = geometry.boxes_to_centers_scales(xywh, aspect_ratio=self.aspect_ratio)
            crops = np.stack([geometry.crop_person(image_rgb, c, s, self.input_wh)
                              for c, s in zip(centers, scales, strict=True)])
        else:
            centers, scales, crops = pipelines.crops(image_rgb, xywh, pipeline, self.input_wh)
        inputs = self._normalised(crops, flip)
        return Prepared((width, height), xywh, box_scores, centers, scales, inputs, flip, pipeline)

    def _normalised(self, crops: np.ndarray, flip: bool) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, 3, self.input_wh[1], self.input_wh[0]), np.float32)
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
        pipeline = prepared.pipeline
        if prepared.flip:
            maps = heatmaps.flip_test_average(maps[:n], maps[n:], self.flip_pairs, shift=pipeline.shift_heatmap)
        if pipeline.decoding == "official":
            coords, maxvals = heatmaps.decode_heatmaps(maps, prepared.centers, prepared.scales)
        else:
            coords, scores = pipelines.keypoints(maps, prepared.centers, prepared.scales, pipeline, self.input_wh)
            maxvals = scores[..., None]
        persons = []
        for i in range(n):
            keypoints = np.concatenate([coords[i], maxvals[i]], axis=1)
            box_score = float(prepared.box_scores[i])
            persons.append(PersonPose(prepared.boxes[i], box_score, heatmaps.rescore_person(box_score, maxvals[i]),
                                      keypoints))
        return persons
