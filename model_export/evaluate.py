"""COCO keypoint AP of an exported model, measured with the service's own code (or the running service).

Flow, as the official HRNet test (core/function.py validate + dataset/coco.py evaluate):
  person boxes (GT boxes of the annotated persons, cleaned as in training, score 1; or a COCO detection-results
  file, person category, score > IMAGE_THRE = 0.0; or a person detector ONNX run on each image, as the service
  runs it: posecore.detection.PersonDetector)
  -> per image: the service's image decode, then its pure pose codec: PoseCodec.crops (box validation,
     center/scale, affine crop, normalisation, mirrored inputs for the flip test) -> the backend ->
     PoseCodec.persons (flip-test average, argmax + quarter-pixel shift, inverse affine, rescoring: box score x
     mean keypoint score above 0.2)
  -> OKS-NMS at 0.9 per image (area = scale_w*200 * scale_h*200) -> pycocotools COCOeval(iouType='keypoints').

With a model file the pipeline runs in this process on ONNX Runtime (OrtBackend, the service's backend; the
micro-batcher is replaced by direct calls in chunks of the backend's batch size). With --url every image and
its boxes are POSTed to a running service (/v1/pose) and its answer is used: what is measured is then what is
deployed. Both end in the same NMS and COCOeval code.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data.validation import image_path, readable_image
from posecore import coco
from posecore.backend import OrtBackend
from posecore.boxes import parse_boxes, refused_rows
from posecore.codec import PersonPose, PoseCodec
from posecore.contract import DEFAULT_MAX_BOXES
from posecore.detection import PersonDetector
from posecore.geometry import boxes_to_centers_scales
from posecore.heatmaps import oks_nms
from posecore.imaging import LOCAL_MAX_IMAGE_BYTES, LOCAL_MAX_IMAGE_PIXELS, decode_image
from posecore.modelcard import InputSpec, ModelCard, OutputSpec, WeightsInfo, read_card

log = logging.getLogger(__name__)

STAT_NAMES: tuple[str, ...] = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)",
                               "AR (L)")
OKS_NMS_THRESHOLD = 0.9  # official TEST.OKS_THRE
DETECTION_SCORE_THRESHOLD = 0.0  # official TEST.IMAGE_THRE: detections with a lower score are dropped
PERSON_CATEGORY_ID = 1

PoseRunner = Callable[[bytes, np.ndarray, bool], list[PersonPose]]


@dataclass(frozen=True)
class ImageEntry:
    image_id: int
    path: Path
    width: int
    height: int


@dataclass
class EvaluationResult:
    stats: dict[str, float]
    results: list[dict]  # COCO keypoint results after NMS
    num_images: int
    num_boxes: int
    dropped_boxes: int = 0
    size_mismatches: list[int] = field(default_factory=list)  # image ids decoded at another size than annotated

    def to_json(self) -> dict[str, Any]:
        return {"stats": self.stats, "stats_list": [self.stats[name] for name in STAT_NAMES],
                "num_images": self.num_images, "num_boxes": self.num_boxes, "dropped_boxes": self.dropped_boxes,
                "num_results": len(self.results), "size_mismatches": self.size_mismatches}


# ---- person boxes -------------------------------------------------------------------------------------------

def load_images(coco_gt, image_dir: str | os.PathLike) -> list[ImageEntry]:
    """The annotated images; a file name that would leave `image_dir` raises InputDataError."""
    return [ImageEntry(int(image["id"]), image_path(Path(image_dir), image["file_name"], f"image {image['id']}"),
                       int(image["width"]), int(image["height"]))
            for image in coco_gt.loadImgs(coco_gt.getImgIds())]


def gt_person_boxes(annotation_file: str | os.PathLike) -> dict[int, np.ndarray]:
    """image id -> (N, 5) x, y, w, h, score=1: the cleaned GT boxes of the persons with keypoints.

    The official use_gt_bbox test database is the training database (same cleaning, same filter), so this
    reuses the training loader's records.
    """
    from model_export.data.dataset import load_person_records

    boxes: dict[int, list] = {}
    for record in load_person_records(annotation_file, "."):
        boxes.setdefault(record.image_id, []).append([*record.box, 1.0])
    return {image_id: np.asarray(rows, dtype=np.float64) for image_id, rows in boxes.items()}


def detection_person_boxes(detections_file: str | os.PathLike,
                           threshold: float = DETECTION_SCORE_THRESHOLD) -> dict[int, np.ndarray]:
    """image id -> (N, 5) boxes from a COCO detection-results JSON (person category, score >= threshold)."""
    detections = json.loads(Path(detections_file).read_text())
    if not isinstance(detections, list):
        raise ValueError(f"{detections_file}: expected a JSON list of COCO detection results")
    boxes: dict[int, list] = {}
    for det in detections:
        if det.get("category_id", PERSON_CATEGORY_ID) != PERSON_CATEGORY_ID:
            continue
        score = float(det.get("score", 1.0))
        if score < threshold:
            continue
        boxes.setdefault(int(det["image_id"]), []).append([*map(float, det["bbox"][:4]), score])
    return {image_id: np.asarray(rows, dtype=np.float64) for image_id, rows in boxes.items()}


def detected_person_boxes(detector: PersonDetector, image: ImageEntry) -> np.ndarray:
    """(N, 5) x, y, w, h, score: the persons `detector` finds in the image (its threshold, NMS, clip and cap)."""
    with readable_image(image.path):
        decoded = decode_image(image.path.read_bytes(), LOCAL_MAX_IMAGE_BYTES, LOCAL_MAX_IMAGE_PIXELS)
    return detector.detect(decoded)


def usable_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int]:
    """Drop the (N, 5) boxes the service refuses (posecore.boxes' own rules): non-finite, empty, absurd, or
    wholly outside the image.

    The official code would crop those anyway (a singular matrix for an empty box); a detector emits them
    rarely, and they cannot match anyone. Returns the kept rows and how many were dropped.
    """
    refused = refused_rows(np.asarray(boxes, dtype=np.float64), (width, height))
    return boxes[~refused], int(refused.sum())


# ---- running the model --------------------------------------------------------------------------------------

class LocalRunner:
    """The service's image decode and pose codec around a backend, in this process."""

    def __init__(self, card: ModelCard, infer: Callable[[np.ndarray], np.ndarray], max_batch: int) -> None:
        self.card = card
        self.infer = infer
        self.max_batch = max_batch
        self.codec = PoseCodec(card)  # what the service runs, without its threads and batcher
        self.last_image_wh: tuple[int, int] = (0, 0)

    @classmethod
    def from_onnx(cls, model_path: str | os.PathLike, provider: str = "cpu", max_batch: int = 8,
                  threads: int = 0) -> LocalRunner:
        """OrtBackend + the card beside the ONNX file, loaded as the service loads them."""
        backend = OrtBackend(Path(model_path), provider=provider, intra_op_threads=threads, max_batch=max_batch)
        card, _ = read_card(Path(model_path), backend)
        return cls(card, backend.infer, backend.max_batch_size)

    def __call__(self, data: bytes, boxes: np.ndarray, flip: bool) -> list[PersonPose]:
        image = decode_image(data, LOCAL_MAX_IMAGE_BYTES, LOCAL_MAX_IMAGE_PIXELS)
        rows = parse_boxes(boxes)
        assert rows is not None
        prepared = self.codec.crops(image, rows, flip)
        self.last_image_wh = prepared.image_wh
        inputs = prepared.inputs
        maps = np.concatenate([self.infer(inputs[i:i + self.max_batch])
                               for i in range(0, len(inputs), self.max_batch)]) if len(inputs) else inputs
        return self.codec.persons(prepared, maps)


class ServiceRunner:
    """A running service, through pose_client: POST /v1/pose per image, its boxes in requests of at most
    `max_boxes` (the service's POSE_MAX_BOXES). Overload answers are retried as the client retries them."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 120.0,
                 max_boxes: int = DEFAULT_MAX_BOXES) -> None:
        from pose_client import PoseClient  # installed beside the project (make install), httpx only

        self.client = PoseClient(url, api_key=api_key, timeout=timeout_s, max_concurrency=1)
        self.max_boxes = max_boxes
        self.card = ModelCard.model_validate(self.client.model()["card"])
        self.last_image_wh: tuple[int, int] = (0, 0)

    def __call__(self, data: bytes, boxes: np.ndarray, flip: bool) -> list[PersonPose]:
        from pose_client import PoseOptions

        options = PoseOptions(flip=flip)
        persons = []
        for start in range(0, len(boxes), self.max_boxes):
            result = self.client.pose(data, boxes[start:start + self.max_boxes].tolist(), options)
            self.last_image_wh = (result.image.width, result.image.height)
            persons += [PersonPose(np.asarray(person.box, dtype=np.float64), person.box_score, person.score,
                                   np.asarray(person.coco_keypoints, dtype=np.float64).reshape(-1, 3))
                        for person in result.persons]
        return persons

    def close(self) -> None:
        self.client.close()


def card_for_config(config, name: str | None = None) -> ModelCard:
    """A card for an in-memory model (validation during training): the export's input/output conventions."""
    return ModelCard(name=name or config.name, arch=config.name, trained=False,
                     input=InputSpec(height=config.input_size[0], width=config.input_size[1]),
                     output=OutputSpec(height=config.heatmap_size[0], width=config.heatmap_size[1],
                                       num_keypoints=config.num_joints),
                     weights=WeightsInfo(source="in-memory training model"))


# ---- NMS and COCOeval ---------------------------------------------------------------------------------------

def person_area(box_xywh: Sequence[float] | np.ndarray, aspect_ratio: float) -> float:
    """The official NMS area of a person: (scale_w * 200) * (scale_h * 200) of its padded box."""
    _, scales = boxes_to_centers_scales(np.asarray(box_xywh, dtype=np.float64)[None, :4], aspect_ratio)
    return float(np.prod(scales[0] * np.float32(coco.PIXEL_STD)))


def to_prediction(image_id: int, person: PersonPose, aspect_ratio: float) -> dict:
    return {"image_id": int(image_id), "keypoints": np.asarray(person.keypoints, dtype=np.float64),
            "score": float(person.score), "area": person_area(person.box, aspect_ratio)}


def nms_results(predictions: Iterable[Mapping], threshold: float = OKS_NMS_THRESHOLD) -> list[dict]:
    """Per image, official OKS-NMS of the rescored persons -> COCO keypoint results (category 1)."""
    by_image: dict[int, list[Mapping]] = {}
    for prediction in predictions:
        by_image.setdefault(int(prediction["image_id"]), []).append(prediction)
    results = []
    for image_id in sorted(by_image):
        persons = by_image[image_id]
        for i in oks_nms(persons, threshold):
            keypoints = np.asarray(persons[i]["keypoints"], dtype=np.float64).reshape(-1)
            results.append({"image_id": image_id, "category_id": PERSON_CATEGORY_ID,
                            "keypoints": [float(v) for v in keypoints], "score": float(persons[i]["score"])})
    return results


def coco_keypoint_stats(coco_gt, results: Sequence[Mapping]) -> dict[str, float]:
    """COCOeval(iouType='keypoints') over every image of the annotation file -> the ten stats by name.

    `coco_gt` is a pycocotools COCO or an annotation file path. No results at all scores 0 everywhere.
    """
    from pycocotools.cocoeval import COCOeval

    from model_export.data.dataset import load_coco

    if isinstance(coco_gt, (str, os.PathLike)):
        coco_gt = load_coco(coco_gt)
    if not results:
        log.warning("no keypoint results to evaluate: every stat is 0")
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))  # loadRes writes into the dicts
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("COCOeval:\n%s", printed.getvalue())
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}


# ---- the whole evaluation -----------------------------------------------------------------------------------

def evaluate(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    runner: PoseRunner,
    card: ModelCard,
    detections_file: str | os.PathLike | None = None,
    flip: bool = True,
    detection_threshold: float = DETECTION_SCORE_THRESHOLD,
    oks_threshold: float = OKS_NMS_THRESHOLD,
    progress: bool = False,
    detector: PersonDetector | None = None,
) -> EvaluationResult:
    """Keypoint AP of `runner` (LocalRunner or ServiceRunner) on an annotation file; see the module docstring.

    With `detector`, its boxes (and scores) are the person boxes, found image by image; `detections_file` is
    then not read.
    """
    from model_export.data.dataset import load_coco

    coco_gt = load_coco(annotation_file)
    images = load_images(coco_gt, image_dir)
    if detector is not None:
        boxes_by_image: dict[int, np.ndarray] = {}  # found image by image in the loop below
    elif detections_file is None:
        boxes_by_image = gt_person_boxes(annotation_file)
    else:
        boxes_by_image = detection_person_boxes(detections_file, detection_threshold)
    aspect_ratio = card.input.width / card.input.height
    predictions: list[dict] = []
    num_boxes, dropped, mismatches = 0, 0, []
    iterator: Iterable[ImageEntry] = images
    if progress:
        from tqdm import tqdm

        iterator = tqdm(images, desc="evaluate", unit="img", dynamic_ncols=True)
    for image in iterator:
        boxes = boxes_by_image.get(image.image_id) if detector is None else detected_person_boxes(detector, image)
        if boxes is None or len(boxes) == 0:
            continue
        boxes, skipped = usable_boxes(boxes, image.width, image.height)
        dropped += skipped
        if len(boxes) == 0:
            continue
        num_boxes += len(boxes)
        with readable_image(image.path):  # a file that is missing or does not decode: one line naming it
            persons = runner(image.path.read_bytes(), boxes, flip)
        if tuple(getattr(runner, "last_image_wh", (image.width, image.height))) != (image.width, image.height):
            mismatches.append(image.image_id)  # e.g. an EXIF orientation the service applied
        predictions.extend(to_prediction(image.image_id, person, aspect_ratio) for person in persons)
    if dropped:
        log.warning("%d person boxes dropped (empty, non-finite or outside their image)", dropped)
    if mismatches:
        log.warning("%d images decoded at another size than annotated (EXIF orientation?): %s", len(mismatches),
                    mismatches[:10])
    results = nms_results(predictions, oks_threshold)
    stats = coco_keypoint_stats(coco_gt, results)
    return EvaluationResult(stats, results, len(images), num_boxes, dropped, mismatches)


def format_stats(stats: Mapping[str, float]) -> str:
    return "\n".join(f"  {name:<7} {stats[name]:.4f}" for name in STAT_NAMES)
