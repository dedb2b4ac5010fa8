"""What a quantization run writes down: the INT8 model's card, the per-layer report, and the comparison that shows
what the head's own ranges change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

from model_export.checkpoint import file_sha256
from model_export.quantize.agreement import Agreement
from model_export.quantize.calibration import CropSet
from model_export.quantize.graph import default_opset
from model_export.quantize.layers import LayerError, layer_errors
from model_export.quantize.ranges import Ranges
from model_export.quantize.search import SearchResult, Step
from model_export.quantize.settings import QuantizeSettings
from model_export.quantize.speed import SpeedComparison
from posecore.modelcard import ModelCard, QuantizationInfo


def method_label(settings: QuantizeSettings) -> str:
    return f"percentile {settings.percentile:g}" if settings.method == "percentile" else settings.method


def head_comparison(settings: QuantizeSettings, quantize_uniform: Callable[[list[str], Path], Path],
                    float_layers: list[str], ranges: Ranges, errors: list[LayerError], prepared: Path,
                    held_batches: list[np.ndarray], evaluate: Callable[[Path], Agreement],
                    work: Path) -> dict[str, Any] | None:
    """The head's layers with their own (MinMax) ranges against the same model with the main method's ranges
    everywhere (same float layers): the noise each head layer adds, and the heatmaps' agreement, both ways."""
    if not ranges.head_tensors:
        return None
    uniform = quantize_uniform(float_layers, work / "uniform-ranges.onnx")
    uniform_errors = {e.name: e for e in layer_errors(prepared, uniform, held_batches)}
    head = set(ranges.head_tensors)
    rows = [{"name": e.name, "op_type": e.op_type, "added_db": round(e.added_db, 2),
             f"added_db_with_{method_label(settings).split()[0]}_ranges": round(uniform_errors[e.name].added_db, 2),
             "sqnr_db": round(e.sqnr_db, 2),
             f"sqnr_db_with_{method_label(settings).split()[0]}_ranges": round(uniform_errors[e.name].sqnr_db, 2)}
            for e in errors if e.tensor in head and e.int8 and e.name in uniform_errors]
    return {"head_method": settings.head_method, "other_method": method_label(settings),
            "head_tensors": len(head), "layers": rows,
            "agreement_with_uniform_ranges": evaluate(uniform).as_dict()}


def settings_summary(settings: QuantizeSettings) -> dict[str, Any]:
    """The knobs that shaped the model, for the report."""
    return {"method": settings.method, "percentile": settings.percentile, "head_method": settings.head_method,
            "float_budget": settings.float_budget, "search_top_k": settings.search_top_k,
            "target": settings.target.as_dict(), "per_channel": settings.per_channel,
            "reduce_range": settings.reduce_range}


def step_record(step: Step) -> dict[str, str | float]:
    return {"layer": step.layer, "op_type": step.op_type, "bought": step.bought(),
            "heatmap_sqnr_db": round(step.after.heatmap_sqnr_db, 2), "median_px": round(step.after.median_px, 3),
            "within_one_heatmap_px": round(step.after.within_one_heatmap_px, 4)}


def report_json(settings: QuantizeSettings, held_out: CropSet, agreement: Agreement, float_layers: dict[str, str],
                found: SearchResult, ranges: Ranges, errors: list[LayerError], comparison: dict[str, Any] | None,
                speed: SpeedComparison) -> dict[str, Any]:
    return {"model": settings.output.name, "parent": settings.model.name, "measured_on": held_out.describe(),
            "settings": settings_summary(settings), "agreement": agreement.as_dict(),
            "target_met": settings.target.met(agreement), "float_layers": float_layers,
            "search": {"steps": [step_record(s) for s in found.steps], "trials": found.trials},
            "speed": speed.as_dict(), "head_ranges": comparison,
            "layers": [{**e.as_dict(), "range": ranges.per_tensor.get(e.tensor)} for e in errors]}


def quantized_card(settings: QuantizeSettings, parent: ModelCard, card_found: bool, quantized: Path,
                   float_layers: dict[str, str], calibration: CropSet, held_out: CropSet, agreement: Agreement,
                   report: Path, batch_size: int, canonical: dict[str, int], ranges: Ranges, steps: list[Step],
                   speed: SpeedComparison) -> ModelCard:
    where = {"annotations": str(settings.annotations), "images": str(settings.images)}
    info = QuantizationInfo(
        method=method_label(settings), per_channel=settings.per_channel, reduce_range=settings.reduce_range,
        float_layers=float_layers,
        calibration={**where, **calibration.describe(), "batch_size": batch_size, "seed": settings.seed},
        held_out={**where, **held_out.describe(), "fraction_of_photos": settings.held_out_fraction},
        parent_onnx=settings.model.name, parent_sha256=file_sha256(settings.model), parent_card_found=card_found,
        agreement=agreement.as_dict(), layer_report=report.name, canonical=canonical,
        head_ranges=(f"{settings.head_method} for the {len(ranges.head_tensors)} head tensors"
                     if ranges.head_tensors else None),
        target=settings.target.as_dict(), search=[step_record(s) for s in steps], speed=speed.as_dict())
    card = parent.model_copy(deep=True)
    card.name = settings.output.stem
    card.quantization = info
    card.opset = default_opset(onnx.load(str(quantized)))
    card.versions = {**card.versions, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}
    card.export_check = {}  # the parent's torch-vs-ORT check; this model's check is `quantization.agreement`
    return card
