"""The model card: the JSON written beside every exported ONNX file and read by the service.

One pydantic model is the contract between `model_export` (writer) and `service` (reader), so the two
cannot disagree on a field. A bare ONNX file without a card gets `ModelCard.official_defaults`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from posecore import coco
from posecore.errors import ModelLoadError

log = logging.getLogger(__name__)

CARD_FORMAT = "hrnet-pose-model-card/1"
# The registry name of the recommended official weights (model_export/fetch/registry.json).
RECOMMENDED_WEIGHTS = "hrnet_w32_coco_256x192"
UNTRAINED_WARNING = (
    "UNTRAINED MODEL: this ONNX file holds randomly initialised weights. Its keypoints are meaningless. "
    f"For real predictions run `make serve WEIGHTS={RECOMMENDED_WEIGHTS}` (or `python -m model_export fetch "
    f"{RECOMMENDED_WEIGHTS}`), which downloads, verifies and exports the official checkpoint "
    "(see README, 'Real weights')."
)


class InputSpec(BaseModel):
    name: str = "input"
    height: int
    width: int
    layout: str = "NCHW"
    dtype: str = "float32"
    color_order: str = Field("RGB", description="Channel order the network expects (RGB or BGR).")
    value_scale: float = Field(255.0, description="Pixels are divided by this before mean/std.")
    mean: tuple[float, float, float] = coco.IMAGENET_MEAN
    std: tuple[float, float, float] = coco.IMAGENET_STD


class OutputSpec(BaseModel):
    name: str = "heatmaps"
    height: int
    width: int
    num_keypoints: int = len(coco.KEYPOINT_NAMES)


class WeightsInfo(BaseModel):
    source: str = Field(description="'random-init' or the checkpoint the weights came from.")
    checkpoint_sha256: str | None = Field(default=None, description="Full sha256 of the checkpoint file.")
    seed: int | None = None
    registry_name: str | None = Field(default=None, description="Name in the weights registry (`python -m model_export "
                                      "fetch --list`), for fetched weights.")
    url: str | None = Field(default=None, description="Where the checkpoint is published, for fetched weights.")
    ap: float | None = Field(default=None, description="COCO val2017 keypoint AP that the publisher reports for the "
                             "checkpoint (not measured here).")


Precision = Literal["fp32", "fp16", "int8"]


class QuantizationInfo(BaseModel):
    """How an INT8 model was made from its float parent (`python -m model_export quantize`) and how closely it
    agrees with it on held-out real crops."""

    precision: Literal["int8"] = "int8"
    format: str = Field("QDQ", description="ONNX QuantizeLinear/DequantizeLinear pairs around int8 operators.")
    method: str = Field(description="Activation calibration, e.g. 'percentile 99.999', 'entropy', 'minmax'.")
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    float_layers: dict[str, str] = Field({}, description="Node name -> why it stays in float.")
    calibration: dict[str, str | int | float] = Field({}, description="Annotations, images and crop count used.")
    held_out: dict[str, str | int | float] = Field({}, description="The held-out crops the agreement is measured on.")
    parent_onnx: str = Field(description="File name of the float32 model this was quantized from.")
    parent_sha256: str = Field(description="sha256 of that float32 ONNX file.")
    parent_card_found: bool = True
    agreement: dict[str, float | int | None] = Field({}, description="Against the float32 parent on held-out crops: "
                                              "heatmap SQNR (dB), keypoint distances (image px) after the official "
                                              "decode, share of joints within one heatmap pixel.")
    layer_report: str | None = Field(None, description="File beside the model with each layer's SQNR.")
    canonical: dict[str, int] = Field({}, description="What was rewritten before calibration (e.g. BatchNormalization "
                                      "folded into Conv / ConvTranspose, Identity removed), by kind.")
    head_ranges: str | None = Field(None, description="Calibration method of the head's activations when it differs "
                                    "from `method` (e.g. 'minmax'), and how many tensors that covers.")
    target: dict[str, float] = Field({}, description="The agreement the mixed-precision search aimed at.")
    search: list[dict[str, str | float]] = Field([], description="Layers the search kept in float, in order, with "
                                                 "the held-out agreement each bought.")
    speed: dict[str, float | int] = Field({}, description="Crops/s of the float parent and of this model on the "
                                          "machine that quantized it (same threads and batch), and their ratio.")


class ModelCard(BaseModel):
    format: str = CARD_FORMAT
    name: str
    arch: str
    trained: bool
    warning: str | None = None
    input: InputSpec
    output: OutputSpec
    keypoints: list[str] = list(coco.KEYPOINT_NAMES)
    flip_pairs: list[tuple[int, int]] = [(a, b) for a, b in coco.FLIP_PAIRS]
    skeleton: list[tuple[int, int]] = [(a, b) for a, b in coco.SKELETON]
    weights: WeightsInfo
    onnx_sha256: str | None = None
    opset: int | None = None
    dynamic_batch: bool = True
    versions: dict[str, str] = {}
    export_check: dict[str, float | int | str | list[int]] = {}
    quantization: QuantizationInfo | None = None

    @property
    def precision(self) -> Precision:
        """int8 for a quantized model, fp16 for an FP16 export (its export check says so), else fp32."""
        if self.quantization is not None:
            return self.quantization.precision
        return "fp16" if self.export_check.get("precision") == "fp16" else "fp32"

    @classmethod
    def official_defaults(cls, name: str, input_hw: tuple[int, int], heatmap_hw: tuple[int, int]) -> ModelCard:
        """Card for a bare ONNX file: the official RGB / ImageNet / COCO-17 conventions, training unknown."""
        return cls(
            name=name,
            arch="unknown",
            trained=False,
            warning="No model card found beside the ONNX file: assuming the official HRNet conventions "
            "(RGB, ImageNet mean/std, COCO-17 order); whether the weights are trained is unknown.",
            input=InputSpec(height=input_hw[0], width=input_hw[1]),
            output=OutputSpec(height=heatmap_hw[0], width=heatmap_hw[1]),
            weights=WeightsInfo(source="unknown"),
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        return cls.model_validate_json(path.read_text())


def card_path_for(onnx_path: Path) -> Path:
    """models/NAME.onnx -> models/NAME.json"""
    return onnx_path.with_suffix(".json")


class ModelShapes(Protocol):
    """What the runtime reports of a loaded model (a backend): the card is checked against it."""

    input_hw: tuple[int, int]
    heatmap_hw: tuple[int, int]
    num_keypoints: int


QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
QOPERATOR_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})


def quantization_in_graph(onnx_path: Path) -> QuantizationInfo | None:
    """For a bare ONNX file: a quantization record saying only what its graph shows, when it holds quantized
    operators, so that an INT8 model without its card is not reported as fp32. None for a float graph, or when
    `onnx` (not in the `serve` extra; ONNX Runtime does not expose the graph) is not installed."""
    try:
        import onnx
    except ImportError:
        log.warning("onnx is not installed: cannot tell whether %s (no card) is quantized; reporting fp32", onnx_path)
        return None
    ops = {node.op_type for node in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    if not ops & (QDQ_OPS | QOPERATOR_OPS):
        return None
    log.warning("%s has no card but quantized operators: reporting it as int8, its calibration unknown", onnx_path)
    return QuantizationInfo(format="QDQ" if ops & QDQ_OPS else "QOperator",
                            method="unknown (no card; quantized operators found in the graph)",
                            parent_onnx="unknown", parent_sha256="unknown", parent_card_found=False)


def read_card(onnx_path: Path, model: ModelShapes) -> tuple[ModelCard, bool]:
    """The card beside the ONNX file, with sizes as the model itself reports them; official defaults if absent.

    Returns (card, found). Raises ModelLoadError when the card is invalid or disagrees on the keypoint count.
    """
    card_path = card_path_for(onnx_path)
    if not card_path.is_file():
        log.warning("no model card at %s: serving %s with the official HRNet defaults (RGB, ImageNet mean/std, "
                    "COCO-17 order)", card_path, onnx_path)
        card = ModelCard.official_defaults(onnx_path.stem, model.input_hw, model.heatmap_hw)
        card.quantization = quantization_in_graph(onnx_path)
        return card, False
    try:
        card = ModelCard.read(card_path)
    except ValueError as exc:
        raise ModelLoadError(f"model card {card_path} is not valid: {str(exc).splitlines()[0]}") from None
    if (card.input.height, card.input.width) != model.input_hw or (
        (card.output.height, card.output.width) != model.heatmap_hw
    ):
        log.warning("model card %s disagrees with the ONNX shapes; using the model's", card_path)
        card.input.height, card.input.width = model.input_hw
        card.output.height, card.output.width = model.heatmap_hw
    if len(card.keypoints) != model.num_keypoints:
        raise ModelLoadError(f"{card_path} lists {len(card.keypoints)} keypoints, the model outputs "
                             f"{model.num_keypoints}")
    return card, True
