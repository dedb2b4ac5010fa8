"""HRNet (official checkpoint or random init) -> ONNX with a dynamic batch axis + the model card beside it.

Every export is verified before it is kept: the ONNX checker, then ONNX Runtime (CPU) on batches of 1 and 3
against the torch model in eval mode. The file is written under a temporary name and renamed into place only
once that check passes, so a failed export never leaves a plausible-looking model behind.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from model_export.checkpoint import (
    CheckpointSource,
    file_sha256,
    load_checkpoint,
    read_checkpoint_config,
    read_checkpoint_file,
)
from model_export.checks import ExportCheckFailed
from model_export.configs import HRNetConfig, get_config
from model_export.hrnet import HRNet, build_hrnet
from posecore.modelcard import UNTRAINED_WARNING, InputSpec, ModelCard, OutputSpec, WeightsInfo, card_path_for

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"
BATCH_AXIS = "batch"
MIN_OPSET = 17
MAX_OPSET = 20  # the highest the TorchScript-based exporter supports in torch 2.13
CHECK_BATCHES = (1, 3)
CHECK_SEED = 1234
# ORT and torch use different conv algorithms: on W32 they agree to ~2e-5 of the output's magnitude, while a
# wrong op or weight gives errors of order 1. The bound is relative because random-init heatmaps are ~1e-10,
# where any absolute floor would accept anything (float arithmetic is scale-free, so relative stays meaningful).
RELATIVE_TOLERANCE = 1e-3


class ExportLog(logging.LoggerAdapter):
    """Prefixes every message of an untrained export, so no line of its output passes for a real model."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        untrained = bool(self.extra and self.extra["untrained"])
        return (f"UNTRAINED model: {msg}" if untrained else msg), kwargs


def tool_versions() -> dict[str, str]:
    import onnxruntime

    try:
        package = importlib.metadata.version("hrnet-pose")
    except importlib.metadata.PackageNotFoundError:
        package = "unknown"
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "hrnet-pose": package}


def resolve_config(arch: str | HRNetConfig | None, checkpoint_obj: Any) -> HRNetConfig:
    """The given arch wins; otherwise the config that a training checkpoint carries."""
    if isinstance(arch, HRNetConfig):
        return arch
    if arch is not None:
        return get_config(arch)
    carried = read_checkpoint_config(checkpoint_obj) if checkpoint_obj is not None else None
    if carried is None:
        raise ValueError("no arch given and the checkpoint carries no config; pass --arch")
    return carried


def prepare_model(config: HRNetConfig, checkpoint_obj: Any, seed: int, source: str | None = None) -> HRNet:
    """The eval-mode model: checkpoint weights (strict load), or the official random init from `seed`."""
    if checkpoint_obj is None:
        return build_hrnet(config, seed=seed).eval()
    model = HRNet(config)
    load_checkpoint(model, checkpoint_obj, source=source)
    return model.eval()


def write_onnx(model: nn.Module, config: HRNetConfig, path: Path, opset: int) -> None:
    """Trace to ONNX: input 'input' (N,3,H,W) float32, output 'heatmaps', axis 0 symbolic ('batch')."""
    height, width = config.input_size
    example = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its deprecation on every call. It is kept because it is proven
        # on this static conv net and, unlike the dynamo exporter, gives the exact names and axes asked for.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
            do_constant_folding=True,
        )


def annotate_onnx(path: Path, config: HRNetConfig, trained: bool) -> None:
    """Record what the file is inside the file, so even a bare ONNX (card lost) says whether it is trained."""
    proto = onnx.load(str(path))
    for key, value in {"hrnet_pose.arch": config.name, "hrnet_pose.trained": str(trained).lower()}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"HRNet {config.name} pose heatmaps" + ("" if trained else f". {UNTRAINED_WARNING}")
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def compare_with_torch(path: Path, model: nn.Module, config: HRNetConfig,
                       batches: Sequence[int] = CHECK_BATCHES) -> dict[str, Any]:
    """Run ONNX Runtime (CPU) and torch on the same random batches; raise unless they agree."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(CHECK_SEED)
    height, width = config.input_size
    max_diff, max_out = 0.0, 0.0
    for batch in batches:
        x = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        if actual.shape != expected.shape:
            raise ExportCheckFailed(f"ONNX output shape {actual.shape} != torch {expected.shape} for batch {batch}")
        max_diff = max(max_diff, float(np.abs(actual - expected).max()))
        max_out = max(max_out, float(np.abs(expected).max()))
    tolerance = RELATIVE_TOLERANCE * max_out if max_out > 0 else 1e-12
    if not max_diff <= tolerance:
        raise ExportCheckFailed(f"ONNX Runtime differs from torch by {max_diff:.3g} (tolerance {tolerance:.3g}, "
                                f"max |output| {max_out:.3g})")
    return {"max_abs_diff": max_diff, "max_abs_output": max_out, "relative_diff": max_diff / max(max_out, 1e-30),
            "tolerance": tolerance, "batches": list(batches), "provider": "CPUExecutionProvider"}


# COCO train2017 holds ~150k persons with keypoints; a checkpoint of our trainer that saw fewer than this many
# distinct persons is a test of the training loop (e.g. coco-mini), and its card says so.
SMOKE_TRAINING_PERSONS = 10_000


def training_summary(checkpoint_obj: Any) -> dict[str, Any] | None:
    """What a checkpoint of model_export.train says it was trained on (None for other checkpoints)."""
    if isinstance(checkpoint_obj, dict) and isinstance(checkpoint_obj.get("training"), dict):
        return checkpoint_obj["training"]
    return None


def describe_training(training: dict[str, Any], checkpoint_path: Path | None) -> tuple[str, str | None]:
    """(weights.source text, card warning or None) for a checkpoint of model_export.train."""
    steps, persons = int(training.get("steps", 0)), int(training.get("persons", 0))
    datasets = ", ".join(f"{d.get('annotations')} ({d.get('persons')} persons)"
                         for d in training.get("datasets", [])) or "unknown data"
    where = f"training checkpoint {checkpoint_path}" if checkpoint_path else "in-memory training checkpoint"
    source = (f"{where}: {steps} steps ({training.get('epochs_completed', 0)} epochs, batch "
              f"{training.get('batch_size', '?')}) on {persons} persons of {datasets}")
    warning = None
    if persons < SMOKE_TRAINING_PERSONS:
        warning = (f"TEST MODEL: trained only {steps} steps on {persons} persons ({datasets}). This checks the "
                   "training loop; it is not a pose model, and its keypoints are meaningless on other images.")
    return source, warning


def make_card(output: Path, config: HRNetConfig, checkpoint_path: Path | None, trained: bool, seed: int,
              opset: int, check: dict[str, Any], training: dict[str, Any] | None = None,
              provenance: dict[str, Any] | None = None) -> ModelCard:
    warning = None if trained else UNTRAINED_WARNING
    if trained:
        source = checkpoint_path.name if checkpoint_path else "in-memory checkpoint"
        if training is not None:
            source, warning = describe_training(training, checkpoint_path)
        weights = WeightsInfo(**{"source": source,
                                 "checkpoint_sha256": file_sha256(checkpoint_path) if checkpoint_path else None,
                                 **(provenance or {})})
    else:
        weights = WeightsInfo(source="random-init", seed=seed)
    return ModelCard(
        name=output.stem,
        arch=config.name,
        trained=trained,
        warning=warning,
        input=InputSpec(name=INPUT_NAME, height=config.input_size[0], width=config.input_size[1]),
        output=OutputSpec(name=OUTPUT_NAME, height=config.heatmap_size[0], width=config.heatmap_size[1],
                          num_keypoints=config.num_joints),
        weights=weights,
        onnx_sha256=file_sha256(output),
        opset=opset,
        dynamic_batch=True,
        versions=tool_versions(),
        export_check=check,
    )


def export_onnx(
    arch: str | HRNetConfig | None,
    output: str | os.PathLike,
    checkpoint: CheckpointSource | None = None,
    seed: int = 0,
    opset: int = MIN_OPSET,
    check_batches: Sequence[int] = CHECK_BATCHES,
    fp16: bool = False,
    provenance: dict[str, Any] | None = None,
) -> ModelCard:
    """Export HRNet to `output` (.onnx) plus its model card (.json beside it); returns the card.

    With `fp16`, the FP32 export is verified against torch first, then converted to FP16 weights and arithmetic
    (float32 input/output) and verified against the FP32 model (model_export.fp16).

    `checkpoint` is a path or an already-loaded checkpoint object. Without it the weights are the official
    random init from `seed`: an UNTRAINED model whose keypoints are meaningless, marked so in the card and
    in the ONNX metadata. `arch` may be None when the checkpoint carries its config. `provenance` holds
    further WeightsInfo fields for the card (source, registry_name, url, ap: see model_export.fetch).
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    output = Path(output)
    if output.suffix != ".onnx":
        raise ValueError(f"output must end in .onnx, got {output}")
    checkpoint_path = Path(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None
    # Read a file once: the config (when arch is None) and the weights come from the same object.
    checkpoint_obj = read_checkpoint_file(checkpoint_path) if checkpoint_path else checkpoint
    trained = checkpoint_obj is not None
    export_log = ExportLog(log, {"untrained": not trained})

    config = resolve_config(arch, checkpoint_obj)
    model = prepare_model(config, checkpoint_obj, seed, source=str(checkpoint_path) if checkpoint_path else None)
    if trained:
        export_log.info("weights from %s", checkpoint_path or "an in-memory checkpoint")
    else:
        export_log.warning("weights: official random init, seed %d. %s", seed, UNTRAINED_WARNING)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(output.name + ".partial")
    try:
        export_log.info("exporting %s (opset %d, dynamic batch axis %r) to %s", config.name, opset, BATCH_AXIS,
                        output)
        write_onnx(model, config, staging, opset)
        annotate_onnx(staging, config, trained)
        check = compare_with_torch(staging, model, config, check_batches)
        if fp16:
            check |= make_fp16(staging, config, check_batches)
        os.replace(staging, output)
    finally:
        staging.unlink(missing_ok=True)
    export_log.info("ONNX Runtime vs torch on batches %s: max abs diff %.3g (relative %.3g, tolerance %.3g), "
                    "max |output| %.3g", check["batches"], check["max_abs_diff"], check["relative_diff"],
                    check["tolerance"], check["max_abs_output"])

    card = make_card(output, config, checkpoint_path, trained, seed, opset, check, training_summary(checkpoint_obj),
                     provenance)
    card.write(card_path_for(output))
    export_log.info("model card written to %s", card_path_for(output))
    return card


def make_fp16(path: Path, config: HRNetConfig, batches: Sequence[int]) -> dict[str, Any]:
    """Replace the verified FP32 file at `path` by its FP16 form, if that stays within tolerance of it."""
    from model_export.fp16 import FP16_RELATIVE_TOLERANCE, compare_fp16, convert_to_fp16

    half = path.with_name(path.name + ".fp16")
    try:
        convert_to_fp16(path, half)
        generator = torch.Generator().manual_seed(CHECK_SEED)
        inputs = [torch.randn(b, 3, *config.input_size, generator=generator).numpy() for b in batches]
        check = compare_fp16(path, half, inputs)
        if not check["fp16_ok"]:
            raise ExportCheckFailed(
                f"FP16 differs from FP32 by {check['fp16_max_abs_diff']:.3g}, over {FP16_RELATIVE_TOLERANCE:g} x max "
                f"|output| ({check['fp16_max_abs_output']:.3g}); keep the FP32 export for this model")
        os.replace(half, path)
        return check
    finally:
        half.unlink(missing_ok=True)
