"""Float32 pose model -> static INT8 QDQ model + card + per-layer report, kept only if it agrees with its parent.

    parent ONNX -> opset check/upgrade -> quant_pre_process -> calibration crops (service preprocessing)
    -> quantize_static (QDQ, per-channel int8 weights, uint8 activations, percentile/entropy/minmax ranges;
       first conv and heatmap conv in float) -> sensitivity check: layers adding the most noise tried in float,
       kept only if the heatmaps gain -> per-layer SQNR and keypoint agreement on held-out photos -> OUT + card

Calibration runs once; every re-quantization of the sensitivity check reuses its ranges (ONNX Runtime's
calibration cache). The output is written under a temporary name and renamed into place only once its agreement
passes, so a failed run never leaves a plausible-looking model behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from model_export.checkpoint import file_sha256
from model_export.quantize.agreement import Agreement, compare_heatmaps, run_model
from model_export.quantize.calibration import (
    CalibrationDataError,
    CropReader,
    CropSet,
    batches,
    make_crops,
    read_person_boxes,
    split_images,
)
from model_export.quantize.graph import default_opset, find_float_layers, pre_process, upgrade_opset
from model_export.quantize.layers import LayerError, layer_errors, sensitive_layers
from posecore.backend import OrtBackend
from posecore.modelcard import ModelCard, QuantizationInfo, card_path_for, read_card

log = logging.getLogger(__name__)

METHODS = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
           "minmax": CalibrationMethod.MinMax}
REPORT_SUFFIX = ".layers.json"


class AgreementTooLow(RuntimeError):
    """The quantized model strays too far from its parent; nothing was written."""


@dataclass
class QuantizeSettings:
    model: Path
    output: Path
    annotations: Path
    images: Path
    max_crops: int = 256
    held_out_fraction: float = 0.25
    max_held_out_crops: int = 128
    method: str = "percentile"
    percentile: float = 99.999
    exclude: tuple[str, ...] = ()
    float_ends: bool = True  # first and heatmap convolutions in float (False: for measuring what that buys)
    sensitivity: bool = True
    sensitive_below_db: float = 30.0  # a layer adding more noise than this SQNR allows is tried in float
    max_sensitive: int = 4
    min_gain_db: float = 0.5  # ...and kept in float only if the heatmaps gain this much
    sensitivity_crops: int = 16
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: for x86 CPUs without VNNI (see README)
    min_heatmap_sqnr_db: float = 15.0
    accept_low_agreement: bool = False
    batch_size: int = 4
    seed: int = 0


@dataclass
class QuantizeResult:
    output: Path
    card: ModelCard
    agreement: Agreement
    layers: list[LayerError]
    float_layers: dict[str, str]
    report: Path
    rejected_candidates: list[str] = field(default_factory=list)


@dataclass
class _Job:
    """What one quantize_static call needs besides the node exclusions."""

    settings: QuantizeSettings
    prepared: Path
    reader: CropReader
    cache: Path

    def quantize(self, exclude: list[str], output: Path) -> Path:
        extra: dict[str, Any] = {"CalibStridedMinMax": 1}  # one batch at a time: W48's activations are GBs
        if self.settings.method == "percentile":
            extra["CalibPercentile"] = self.settings.percentile
        self.reader.rewind()
        with _quiet():
            quantize_static(
                str(self.prepared), str(output), self.reader, quant_format=QuantFormat.QDQ,
                per_channel=self.settings.per_channel, reduce_range=self.settings.reduce_range,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=METHODS[self.settings.method], nodes_to_exclude=exclude, extra_options=extra,
                calibration_cache_path=str(self.cache))
        return output


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization prints its progress and logs every bias copy at INFO on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_model(settings: QuantizeSettings) -> QuantizeResult:
    if settings.method not in METHODS:
        raise ValueError(f"unknown calibration method {settings.method!r}; one of {', '.join(METHODS)}")
    if settings.output.suffix != ".onnx" or settings.output.resolve() == settings.model.resolve():
        raise ValueError(f"--output must be a new .onnx path beside its card, not {settings.output}")
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=settings.output.parent) as tmp:
        work = Path(tmp)
        upgraded = upgrade_opset(settings.model, work)  # refuses what cannot be quantized before any real work
        parent = OrtBackend(upgraded, provider="cpu", max_batch=settings.batch_size)
        card, card_found = read_card(settings.model, parent)
        batch_size = parent.batch_sizes[-1] if len(parent.batch_sizes) == 1 else settings.batch_size
        calibration, held_out = _crop_sets(settings, card)
        prepared = pre_process(upgraded, work / "prepared.onnx")
        graph = onnx.load(str(prepared))
        unknown = set(settings.exclude) - {node.name for node in graph.graph.node}
        if unknown:
            raise ValueError(f"--exclude names no node of the model: {', '.join(sorted(unknown))} (the layer "
                             "report lists the node names)")
        fixed = find_float_layers(graph)
        float_layers: dict[str, str] = {}
        if settings.float_ends:
            float_layers = {fixed.first_conv: "first convolution (raw normalised pixels, 3 input channels)",
                            fixed.heatmap_conv: "final heatmap convolution (its output is the answer)"}
        float_layers |= {name: "asked for (--exclude)" for name in settings.exclude}
        input_name = parent.session.get_inputs()[0].name
        job = _Job(settings, prepared, CropReader(input_name, batches(calibration.inputs, batch_size)),
                   work / "calibration.json")
        candidate = job.quantize(list(float_layers), work / "int8.onnx")
        rejected: list[str] = []
        if settings.sensitivity:
            candidate, rejected = _sensitivity(job, candidate, calibration, batch_size, float_layers, work)
        errors = layer_errors(prepared, candidate, batches(held_out.inputs, batch_size))
        reference = run_model(upgraded, held_out.inputs, batch_size)  # the parent as served
        agreement = compare_heatmaps(reference, run_model(candidate, held_out.inputs, batch_size), held_out)
        log.info("INT8 vs float32 on held-out crops: %s", agreement.summary())
        if agreement.heatmap_sqnr_db < settings.min_heatmap_sqnr_db and not settings.accept_low_agreement:
            raise AgreementTooLow(
                f"the INT8 heatmaps agree with float32 only to {agreement.heatmap_sqnr_db:.1f} dB SQNR (minimum "
                f"{settings.min_heatmap_sqnr_db:g}); {agreement.summary()}. Nothing was written. Try --method "
                "entropy or percentile, more calibration crops, or --exclude the worst layers of the report "
                "(--accept-low-agreement writes it anyway).")
        _annotate(candidate, settings.model)
        report = settings.output.with_name(settings.output.stem + REPORT_SUFFIX)
        quantized_card = _card(settings, card, card_found, candidate, float_layers, calibration, held_out, agreement,
                               report, batch_size)
        os.replace(candidate, settings.output)
    quantized_card.onnx_sha256 = file_sha256(settings.output)
    quantized_card.write(card_path_for(settings.output))
    report.write_text(json.dumps({"model": settings.output.name, "parent": settings.model.name,
                                  "measured_on": held_out.describe(), "agreement": agreement.as_dict(),
                                  "float_layers": float_layers, "sensitivity_rejected": rejected,
                                  "layers": [e.as_dict() for e in errors]}, indent=1) + "\n")
    return QuantizeResult(settings.output, quantized_card, agreement, errors, float_layers, report, rejected)


def _crop_sets(settings: QuantizeSettings, card: ModelCard) -> tuple[CropSet, CropSet]:
    """(calibration crops, held-out crops), from different photos."""
    calibration_images, held_out_images = split_images(read_person_boxes(settings.annotations, settings.images),
                                                       settings.held_out_fraction, settings.seed)
    if not held_out_images:
        raise CalibrationDataError("no held-out photos to measure agreement on: give a --held-out-fraction above 0 "
                                   "and annotations with at least two photos")
    calibration = make_crops(calibration_images, card, settings.max_crops, settings.seed)
    held_out = make_crops(held_out_images, card, settings.max_held_out_crops, settings.seed)
    log.info("calibration: %d crops from %d photos; held out: %d crops from %d photos", len(calibration),
             len(calibration.images), len(held_out), len(held_out.images))
    return calibration, held_out


def _sensitivity(job: _Job, candidate: Path, calibration: CropSet, batch_size: int, float_layers: dict[str, str],
                 work: Path) -> tuple[Path, list[str]]:
    """Try the layers that add the most noise in float, one at a time, worst first; keep each only if the
    heatmaps of a slice of the calibration crops (never the held-out ones) gain `min_gain_db`."""
    settings = job.settings
    probe = CropSet(calibration.inputs[:settings.sensitivity_crops], calibration.centers[:settings.sensitivity_crops],
                    calibration.scales[:settings.sensitivity_crops], calibration.images)
    errors = layer_errors(job.prepared, candidate, batches(probe.inputs, batch_size))
    flagged = sensitive_layers(errors, settings.sensitive_below_db, float_layers, settings.max_sensitive)
    if not flagged:
        return candidate, []
    reference = run_model(job.prepared, probe.inputs, batch_size)
    best = compare_heatmaps(reference, run_model(candidate, probe.inputs, batch_size), probe).heatmap_sqnr_db
    rejected = []
    for index, layer in enumerate(flagged):
        trial = job.quantize([*float_layers, layer.name], work / f"trial{index}.onnx")
        sqnr = compare_heatmaps(reference, run_model(trial, probe.inputs, batch_size), probe).heatmap_sqnr_db
        log.info("sensitivity: %s adds noise at %.1f dB; in float the heatmaps go %.1f -> %.1f dB", layer.name,
                 layer.added_db, best, sqnr)
        if sqnr >= best + settings.min_gain_db:
            float_layers[layer.name] = f"sensitivity check: adds noise at {layer.added_db:.1f} dB SQNR; in float " \
                                       f"the heatmaps gain {sqnr - best:.1f} dB"
            candidate, best = trial, sqnr
        else:
            rejected.append(layer.name)
    return candidate, rejected


def _annotate(path: Path, parent: Path) -> None:
    """Say inside the file what it is, so even a bare copy (card lost) tells it is an int8 derivative."""
    proto = onnx.load(str(path))
    for key, value in {"hrnet_pose.precision": "int8", "hrnet_pose.parent_sha256": file_sha256(parent)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _card(settings: QuantizeSettings, parent: ModelCard, card_found: bool, quantized: Path,
          float_layers: dict[str, str], calibration: CropSet, held_out: CropSet, agreement: Agreement,
          report: Path, batch_size: int) -> ModelCard:
    method = f"percentile {settings.percentile:g}" if settings.method == "percentile" else settings.method
    where = {"annotations": str(settings.annotations), "images": str(settings.images)}
    info = QuantizationInfo(
        method=method, per_channel=settings.per_channel, reduce_range=settings.reduce_range,
        float_layers=float_layers,
        calibration={**where, **calibration.describe(), "batch_size": batch_size, "seed": settings.seed},
        held_out={**where, **held_out.describe(), "fraction_of_photos": settings.held_out_fraction},
        parent_onnx=settings.model.name, parent_sha256=file_sha256(settings.model), parent_card_found=card_found,
        agreement=agreement.as_dict(), layer_report=report.name)
    card = parent.model_copy(deep=True)
    card.name = settings.output.stem
    card.quantization = info
    card.opset = default_opset(onnx.load(str(quantized)))
    card.versions = {**card.versions, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}
    card.export_check = {}  # the parent's torch-vs-ORT check; this model's check is `quantization.agreement`
    return card
