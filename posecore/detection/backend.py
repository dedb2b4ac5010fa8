"""`PersonDetector`: a detector ONNX file in an ONNX Runtime session, and the pure steps around it.

Serving splits one detection into `prepare` (letterbox, pure, on a worker thread), `infer` (what a
MicroBatcher calls with a stacked batch) and `boxes` (decode + NMS + threshold + clip + cap, pure); `detect`
chains the three for callers without a batcher (evaluation, tests).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from posecore.backend import ModelLoadError, batch_shapes, open_session, run_in_padded_batches
from posecore.contract import DEFAULT_MAX_BOXES
from posecore.detection import end2end, yolox
from posecore.detection.card import DetectorCard, DetectorLoadError, read_detector_card
from posecore.detection.letterbox import PAD_VALUE, Ratio, letterbox
from posecore.detection.nms import finish_boxes
from posecore.detection.shapes import TensorInfo, detector_io, infer_card

log = logging.getLogger(__name__)

MIN_BOX_SIDE = 2.0  # pixels: a clipped box thinner than this holds nobody's pose


class PersonDetector:
    """Person boxes from a YOLOX (or mmdeploy end2end) ONNX detector. `infer` runs on one thread at a time."""

    def __init__(
        self,
        model_path: Path,
        *,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        max_boxes: int = DEFAULT_MAX_BOXES,
        min_box_side: float = MIN_BOX_SIDE,
        provider: str = "auto",
        intra_op_threads: int = 0,
        max_batch: int = 8,
        trt_cache_dir: Path | None = None,
        trt_fp16: bool = False,
        spin: bool = True,
    ) -> None:
        """Open the detector and read its card; thresholds left None come from the card.

        Raises DetectorLoadError (a ModelLoadError) with one line naming the file when the file or its card
        is missing, unreadable or not a detector this class can read.
        """
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise DetectorLoadError(f"detector file not found: {self.model_path}")
        card = read_detector_card(self.model_path)
        try:
            self.session, self.status = open_session(
                self.model_path, provider=provider, intra_op_threads=intra_op_threads, trt_cache_dir=trt_cache_dir,
                trt_fp16=trt_fp16, spin=spin)
        except ModelLoadError as exc:
            raise DetectorLoadError(f"detector: {exc}") from exc
        inputs = [TensorInfo(i.name, tuple(i.shape)) for i in self.session.get_inputs()]
        outputs = [TensorInfo(o.name, tuple(o.shape)) for o in self.session.get_outputs()]
        self.card_found = card is not None
        self.warning: str | None = None
        if card is None:
            card = infer_card(self.model_path, inputs, outputs)
            self.warning = (f"no detector card {self.model_path.with_suffix('.json').name} beside "
                            f"{self.model_path.name}: read as {card.layout} from its shapes, input "
                            f"{list(card.input_size)}, thresholds and class names assumed")
            log.warning("%s", self.warning)
        self.card: DetectorCard = card
        self.io = detector_io(self.model_path, card, inputs, outputs)
        self.input_dtype = np.float16 if self.session.get_inputs()[0].type == "tensor(float16)" else np.float32
        self.score_threshold = card.score_threshold if score_threshold is None else float(score_threshold)
        self.nms_iou = card.nms_iou if nms_iou is None else float(nms_iou)
        self.max_boxes = max_boxes
        self.min_box_side = min_box_side
        self.batch_sizes = batch_shapes(self.io.fixed_batch, max_batch, self.provider)
        self._check_output()

    # ---- what the serving layer reads -----------------------------------------------------------------------

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.io.input_hw

    @property
    def max_batch_size(self) -> int:
        """Images per `infer` call worth batching: the fixed batch axis (the official export: 1) or max_batch."""
        return self.batch_sizes[-1]

    @property
    def provider(self) -> str:
        return self.status.active

    @property
    def layout(self) -> str:
        return self.card.layout

    # ---- the three steps ------------------------------------------------------------------------------------

    def prepare(self, image_rgb: np.ndarray) -> tuple[np.ndarray, Ratio]:
        """RGB uint8 image -> (float32 (3, H, W) letterboxed input, ratio), by the card's framework. Pure."""
        return letterbox(image_rgb, self.input_hw, self.card.preprocessing)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, H, W) -> one raw row per image: yolox (N, A, 5 + C); end2end (N, M, 6) packed."""
        if batch.dtype != self.input_dtype:
            batch = batch.astype(self.input_dtype)
        parts = run_in_padded_batches(self._run, batch, self.batch_sizes)
        if len(parts) == 1:
            return parts[0]
        if self.layout == "end2end":  # each run may pad to its own N: pad all to the longest with score-0 rows
            longest = max(p.shape[1] for p in parts)
            parts = [np.pad(p, ((0, 0), (0, longest - p.shape[1]), (0, 0))) for p in parts]
        return np.concatenate(parts)

    def boxes(self, raw_row: np.ndarray, ratio: Ratio, image_wh: tuple[int, int]) -> np.ndarray:
        """One image's raw row -> float64 (M, 5) x, y, w, h, score in image pixels, best first. Pure."""
        if self.layout == "end2end":
            dets = end2end.person_detections(raw_row, ratio, score_threshold=self.score_threshold,
                                             person_class=self.card.person_class)
        else:
            dets = yolox.person_detections(raw_row, ratio, self.input_hw, score_threshold=self.score_threshold,
                                           nms_iou=self.nms_iou, person_class=self.card.person_class)
        return finish_boxes(dets, image_wh, self.max_boxes, self.min_box_side)

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        """prepare -> infer -> boxes for one image, without a batcher."""
        inputs, ratio = self.prepare(image_rgb)
        raw = self.infer(inputs[None])
        return self.boxes(raw[0], ratio, (image_rgb.shape[1], image_rgb.shape[0]))

    def warmup(self) -> None:
        """Run every batch shape once, so no request pays for a first-shape allocation or engine build."""
        for size in self.batch_sizes:
            self._run(self._blank(size))

    # ---- ONNX Runtime ---------------------------------------------------------------------------------------

    def _blank(self, size: int) -> np.ndarray:
        return np.full((size, 3, *self.input_hw), PAD_VALUE, dtype=self.input_dtype)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        outputs = self.session.run(list(self.io.output_names), {self.io.input_name: batch})
        if self.layout == "end2end":
            return end2end.pack(np.asarray(outputs[0]), np.asarray(outputs[1]))
        return np.asarray(outputs[0], dtype=np.float32)

    def _check_output(self) -> None:
        """One blank run: the file must answer in the shape its card promises (a card can be wrong)."""
        size = self.batch_sizes[0]
        try:
            raw = self._run(self._blank(size))
        except Exception as exc:  # onnxruntime's own error types, or pack() refusing the shapes
            raise DetectorLoadError(f"detector {self.model_path}: a blank run failed: "
                                    f"{str(exc).splitlines()[0]}") from exc
        if self.layout == "yolox":
            expected: tuple[int, ...] = (size, yolox.num_anchors(self.input_hw), 5 + len(self.card.class_names))
            if raw.shape != expected:
                raise DetectorLoadError(f"detector {self.model_path}: output {self.io.output_names[0]} is "
                                        f"{list(raw.shape)}, expected {list(expected)}")
        elif raw.shape[0] != size:
            raise DetectorLoadError(f"detector {self.model_path}: end2end outputs have batch {raw.shape[0]}, "
                                    f"expected {size}")

