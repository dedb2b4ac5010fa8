"""YOLOX checkpoint (or seeded random init) -> ONNX in the official YOLOX layout + the detector card beside it.

The file is what Megvii's tools/export_onnx.py writes with `decode_in_inference=False`: input `images`
(N, 3, H, W) BGR 0-255, output `output` (N, A, 5 + C) with raw box regression and sigmoid-ed objectness and
class scores, except that the batch axis is dynamic (the official export fixes it to 1). Each export is checked
against torch in ONNX Runtime on batches of 1 and 2 before it is renamed into place, as for HRNet.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from model_export.checkpoint import file_sha256, read_checkpoint_file
from model_export.checks import ExportCheckFailed
from model_export.yolox.checkpoint import load_yolox_checkpoint
from model_export.yolox.configs import YoloxConfig, get_yolox_config
from model_export.yolox.model import YOLOX
from posecore.detection.card import COCO_CLASS_NAMES, DetectorCard, DetectorSource, card_path

log = logging.getLogger(__name__)

INPUT_NAME = "images"  # the official YOLOX ONNX names
OUTPUT_NAME = "output"
BATCH_AXIS = "batch"
OPSET = 17
CHECK_BATCHES = (1, 2)
CHECK_SEED = 4321
# ORT and torch agree to ~1e-5 on these outputs (sigmoid scores and box regressions of order 1); a wrong op or
# weight differs by order 1. Relative to the largest output so that an untrained net's large raw values pass.
TOLERANCE = 1e-4
UNTRAINED_DETECTOR_WARNING = ("UNTRAINED DETECTOR: random weights, its boxes are noise. For a real one: "
                              "`python -m model_export fetch --list` (kind detector).")
# The letterbox each checkpoint layout's framework tests with (posecore.detection.letterbox).
PREPROCESSING_OF_LAYOUT = {"megvii": "yolox", "mmdet": "mmdet"}


def build_detector(config: YoloxConfig, checkpoint: Any | None, source: str, seed: int) -> tuple[YOLOX, str | None]:
    """The eval-mode model and its checkpoint layout (None for a random init from `seed`)."""
    if checkpoint is None:
        torch.manual_seed(seed)
        return YOLOX(config).eval(), None
    model = YOLOX(config)
    report = load_yolox_checkpoint(model, checkpoint, source)
    return model.eval(), report.layout


def write_detector_onnx(model: YOLOX, path: Path, opset: int = OPSET) -> None:
    height, width = model.config.input_size
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice, as in model_export.export
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, height, width),), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    for key, value in {"hrnet_pose.kind": "detector", "hrnet_pose.arch": model.config.name}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def compare_detector_with_torch(path: Path, model: YOLOX, batches: Sequence[int] = CHECK_BATCHES) -> dict[str, Any]:
    """ONNX Runtime (CPU) vs torch on random 0-255 images; ExportCheckFailed unless they agree."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(CHECK_SEED)
    max_diff, max_out = 0.0, 0.0
    for batch in batches:
        images = torch.rand(batch, 3, *model.config.input_size, generator=generator) * 255.0
        with torch.no_grad():
            expected = model(images).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        if actual.shape != expected.shape:
            raise ExportCheckFailed(f"ONNX output {list(actual.shape)} != torch {list(expected.shape)} (batch {batch})")
        max_diff = max(max_diff, float(np.abs(actual - expected).max()))
        max_out = max(max_out, float(np.abs(expected).max()))
    tolerance = TOLERANCE * max(1.0, max_out)
    if not max_diff <= tolerance:
        raise ExportCheckFailed(f"ONNX Runtime differs from torch by {max_diff:.3g} (tolerance {tolerance:.3g})")
    return {"max_abs_diff": max_diff, "max_abs_output": max_out, "tolerance": tolerance, "batches": list(batches)}


def detector_card(output: Path, config: YoloxConfig, layout: str | None, seed: int,
                  provenance: dict[str, Any] | None) -> DetectorCard:
    trained = layout is not None
    source = DetectorSource(**(provenance or {}), checkpoint_layout=layout) if trained else DetectorSource(seed=seed)
    class_names = list(COCO_CLASS_NAMES) if config.num_classes == len(COCO_CLASS_NAMES) else (
        ["person"] + [f"class_{i}" for i in range(1, config.num_classes)])
    return DetectorCard(name=output.stem, layout="yolox", arch=config.name, input_size=config.input_size,
                        preprocessing=PREPROCESSING_OF_LAYOUT[layout] if layout else "yolox", trained=trained,
                        warning=None if trained else UNTRAINED_DETECTOR_WARNING, class_names=class_names,
                        source=source)


def export_detector(arch: str | YoloxConfig, output: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                    *, seed: int = 0, provenance: dict[str, Any] | None = None,
                    check_batches: Sequence[int] = CHECK_BATCHES) -> tuple[DetectorCard, dict[str, Any]]:
    """Export YOLOX to `output` (.onnx) and its detector card (.json beside it); returns the card and the check.

    `checkpoint`: a Megvii or mmdetection .pth (strictly loaded, CheckpointError otherwise); None: an UNTRAINED
    random init from `seed`. `provenance`: DetectorSource fields for the card (url, sha256, registry_name, ...).
    """
    config = arch if isinstance(arch, YoloxConfig) else get_yolox_config(arch)
    output = Path(output)
    if output.suffix != ".onnx":
        raise ValueError(f"output must end in .onnx, got {output}")
    checkpoint_obj = read_checkpoint_file(checkpoint) if checkpoint is not None else None
    model, layout = build_detector(config, checkpoint_obj, str(checkpoint), seed)
    if layout is None:
        log.warning("UNTRAINED detector: %s random init, seed %d", config.name, seed)
    provenance = dict(provenance or {})
    if checkpoint is not None and "sha256" not in provenance:
        provenance["sha256"] = file_sha256(checkpoint)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(output.name + ".partial")
    try:
        write_detector_onnx(model, staging)
        check = compare_detector_with_torch(staging, model, check_batches)
        os.replace(staging, output)
    finally:
        staging.unlink(missing_ok=True)
    card = detector_card(output, config, layout, seed, provenance)
    card.write(card_path(output))
    log.info("%s exported to %s (card %s, %s letterbox); ORT vs torch max abs diff %.3g on batches %s", config.name,
             output, card_path(output), card.preprocessing, check["max_abs_diff"], check["batches"])
    return card, check
