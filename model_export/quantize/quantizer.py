"""Float32 pose model -> static INT8 QDQ model + card + per-layer report, kept only if it reaches its agreement
target and runs faster than its parent.

    parent ONNX -> opset check/upgrade -> canonical graph (BN folded into Conv/ConvTranspose, activations fused,
    identities gone; outputs checked) -> quant_pre_process -> calibration crops (service preprocessing)
    -> ranges per tensor (percentile/entropy/minmax; MinMax on the head) -> quantize_static (QDQ, per-channel int8
    weights, uint8 activations; first conv and heatmap conv in float) -> mixed-precision search to the target
    (cumulative greedy, a float budget) -> per-layer report and agreement on held-out photos -> crops/s of parent
    and INT8 -> OUT + card

Calibration runs once; every re-quantization of the search reuses its ranges (ONNX Runtime's calibration cache).
The output is written under a temporary name and renamed into place only once target and speed pass, so a
refused run never leaves a plausible-looking model behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

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
from model_export.quantize.canonical import write_canonical
from model_export.quantize.graph import find_float_layers, pre_process, upgrade_opset
from model_export.quantize.layers import LayerError, layer_errors
from model_export.quantize.ranges import METHODS, Ranges, calibrate, quiet
from model_export.quantize.record import head_comparison, quantized_card, report_json
from model_export.quantize.search import SearchResult, Step, rank_candidates, search
from model_export.quantize.settings import QuantizeSettings
from model_export.quantize.speed import NO_GAIN, SpeedComparison, measure_speed
from posecore.backend import OrtBackend
from posecore.modelcard import ModelCard, card_path_for, read_card

log = logging.getLogger(__name__)

REPORT_SUFFIX = ".layers.json"
__all__ = ["METHODS", "REPORT_SUFFIX", "AgreementTooLow", "NotFaster", "QuantizeSettings", "quantize_model"]


class AgreementTooLow(RuntimeError):
    """The quantized model strays too far from its parent even with the float budget spent; nothing was written."""


class NotFaster(RuntimeError):
    """The INT8 model is not faster than its parent on this machine; nothing was written."""


@dataclass
class QuantizeResult:
    output: Path
    card: ModelCard
    agreement: Agreement
    layers: list[LayerError]
    float_layers: dict[str, str]
    report: Path
    steps: list[Step]
    speed: SpeedComparison
    canonical: dict[str, int]
    ranges: Ranges


@dataclass
class _Job:
    """What one quantize_static call needs besides the node exclusions."""

    settings: QuantizeSettings
    prepared: Path
    reader: CropReader
    ranges: Ranges

    def quantize(self, exclude: list[str], output: Path, uniform: bool = False) -> Path:
        self.reader.rewind()
        with quiet():
            quantize_static(
                str(self.prepared), str(output), self.reader, quant_format=QuantFormat.QDQ,
                per_channel=self.settings.per_channel, reduce_range=self.settings.reduce_range,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=self.ranges.method, nodes_to_exclude=exclude,
                calibration_cache_path=str(self.ranges.uniform_cache if uniform else self.ranges.cache))
        return output


def _check(settings: QuantizeSettings) -> None:
    if settings.method not in METHODS:
        raise ValueError(f"unknown calibration method {settings.method!r}; one of {', '.join(METHODS)}")
    if settings.head_method not in (None, "minmax"):
        raise ValueError(f"the head's ranges can be minmax or the method's own (None), not {settings.head_method!r}")
    if settings.output.suffix != ".onnx" or settings.output.resolve() == settings.model.resolve():
        raise ValueError(f"--output must be a new .onnx path beside its card, not {settings.output}")
    if settings.float_budget < 0 or settings.search_top_k < 1:
        raise ValueError("the float budget must be >= 0 and the search must try >= 1 layer per step")


def quantize_model(settings: QuantizeSettings) -> QuantizeResult:
    _check(settings)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=settings.output.parent) as tmp:
        work = Path(tmp)
        upgraded = upgrade_opset(settings.model, work)  # refuses what cannot be quantized before any real work
        parent = OrtBackend(upgraded, provider="cpu", max_batch=settings.batch_size)
        card, card_found = read_card(settings.model, parent)
        batch_size = parent.batch_sizes[-1] if len(parent.batch_sizes) == 1 else settings.batch_size
        calibration, held_out = _crop_sets(settings, card)
        canonical = write_canonical(upgraded, work / "canonical.onnx", batches(held_out.inputs, batch_size)[0])
        prepared = pre_process(work / "canonical.onnx", work / "prepared.onnx")
        float_layers = _fixed_float_layers(settings, onnx.load(str(prepared)))
        reader = CropReader(parent.session.get_inputs()[0].name, batches(calibration.inputs, batch_size))
        ranges = calibrate(prepared, reader, settings.method, settings.percentile, settings.head_method, work)
        job = _Job(settings, prepared, reader, ranges)
        reference = run_model(upgraded, held_out.inputs, batch_size)  # the parent as served

        def evaluate(path: Path) -> Agreement:
            return compare_heatmaps(reference, run_model(path, held_out.inputs, batch_size), held_out)

        held_batches = batches(held_out.inputs, batch_size)
        start = job.quantize(list(float_layers), work / "int8.onnx")
        found = SearchResult(start, evaluate(start))
        errors = layer_errors(prepared, start, held_batches)
        if settings.search and settings.float_budget > 0 and not settings.target.met(found.agreement):
            found = search(job.quantize, evaluate, list(float_layers), start, found.agreement,
                           rank_candidates(errors, set(float_layers)), settings.target, settings.float_budget,
                           settings.search_top_k, work)
            for number, step in enumerate(found.steps, 1):
                float_layers[step.layer] = f"search step {number}: {step.bought()}"
            if found.steps:
                errors = layer_errors(prepared, found.model, held_batches)
        agreement = found.agreement
        log.info("INT8 vs float32 on held-out crops: %s", agreement.summary())
        if not settings.target.met(agreement) and not settings.accept_low_agreement:
            raise AgreementTooLow(_how_close(settings, agreement, found))
        comparison = head_comparison(settings, partial(job.quantize, uniform=True), list(float_layers), ranges, errors,
                                     prepared, held_batches, evaluate, work)
        speed = (settings.speed_probe or measure_speed)(upgraded, found.model, batch_size, held_out.inputs)
        log.info("%s", speed.summary())
        if not speed.faster and not settings.allow_slower:
            raise NotFaster(f"{NO_GAIN} ({speed.summary()}); nothing was written (--allow-slower writes it anyway)")
        _annotate(found.model, settings.model)
        report = settings.output.with_name(settings.output.stem + REPORT_SUFFIX)
        out_card = quantized_card(settings, card, card_found, found.model, float_layers, calibration, held_out,
                                  agreement, report, batch_size, canonical, ranges, found.steps, speed)
        os.replace(found.model, settings.output)
    out_card.onnx_sha256 = file_sha256(settings.output)
    out_card.write(card_path_for(settings.output))
    report.write_text(json.dumps(report_json(settings, held_out, agreement, float_layers, found, ranges, errors,
                                             comparison, speed), indent=1) + "\n")
    return QuantizeResult(settings.output, out_card, agreement, errors, float_layers, report, found.steps, speed,
                          canonical, ranges)


def _fixed_float_layers(settings: QuantizeSettings, graph: onnx.ModelProto) -> dict[str, str]:
    unknown = set(settings.exclude) - {node.name for node in graph.graph.node}
    if unknown:
        raise ValueError(f"--exclude names no node of the model: {', '.join(sorted(unknown))} (the layer "
                         "report lists the node names)")
    fixed = find_float_layers(graph)
    float_layers: dict[str, str] = {}
    if settings.float_ends:
        float_layers = {fixed.first_conv: "first convolution (raw normalised pixels, 3 input channels)",
                        fixed.heatmap_conv: "final heatmap convolution (its output is the answer)"}
    return float_layers | {name: "asked for (--exclude)" for name in settings.exclude}


def _how_close(settings: QuantizeSettings, agreement: Agreement, found: SearchResult) -> str:
    target = settings.target
    spent = (f"the search kept {len(found.steps)} layer(s) in float ({', '.join(s.layer for s in found.steps)}) "
             f"in {found.trials} trials" if found.steps else
             f"the search found no layer whose float version helps ({found.trials} trials)" if found.trials else
             "no search ran (--no-search or a float budget of 0)")
    return (f"the INT8 model does not reach the target ({target.describe()}) with a float budget of "
            f"{settings.float_budget} layers: {spent}; the closest it got: {agreement.summary()} (short: "
            f"{'; '.join(target.shortfalls(agreement))}). Nothing was written. Try a larger --float-budget, more "
            "calibration crops, or --accept-low-agreement to write it anyway.")


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


def _annotate(path: Path, parent: Path) -> None:
    """Say inside the file what it is, so even a bare copy (card lost) tells it is an int8 derivative."""
    proto = onnx.load(str(path))
    for key, value in {"hrnet_pose.precision": "int8", "hrnet_pose.parent_sha256": file_sha256(parent)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))

