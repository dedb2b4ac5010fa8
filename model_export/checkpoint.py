"""Load HRNet checkpoints of the usual layouts into `HRNet` strictly, with a short report on failure.

Accepted layouts (all normalised to the official key names before a strict load):
- a plain official state_dict (leoxiaobin `pose_hrnet_w32_256x192.pth`);
- wrapped as {'state_dict': ...}, {'model': ...}, {'best_state_dict': ...} (official training output),
  or {'config': ..., 'state_dict': ...} (our own training checkpoints, which carry their config);
- DataParallel / DistributedDataParallel `module.` prefixes;
- mmpose 1.x (`backbone.*` + `head.final_layer.*`) and mmpose 0.x (`keypoint_head.final_layer.*`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_export.configs import HRNetConfig, config_from_dict, config_from_official_model, get_config

log = logging.getLogger(__name__)

# Keys under which trainers nest the weights, most specific first.
WRAPPER_KEYS = ("state_dict", "model", "best_state_dict", "model_state_dict")
DATA_PARALLEL_PREFIX = "module."
# mmpose names the HRNet trunk `backbone` and the heatmap conv `<head>.final_layer`.
MMPOSE_RENAMES = (
    ("backbone.", ""),
    ("head.final_layer.", "final_layer."),
    ("keypoint_head.final_layer.", "final_layer."),
)
LISTED_KEYS = 10  # how many keys of each kind an error message names before "... and N more"

CheckpointSource = str | os.PathLike | Mapping[str, Any]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or understood."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint whose tensors do not fit the model (usually: another architecture)."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str],
                 shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]]):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatches = shape_mismatches


@dataclass
class LoadReport:
    """What was loaded and which renames it took."""

    source: str
    num_tensors: int
    layout: str  # "official", "mmpose", ...
    unwrapped: list[str] = field(default_factory=list)  # wrapper keys removed, outermost first
    stripped_prefixes: list[str] = field(default_factory=list)
    filled_num_batches_tracked: int = 0  # old checkpoints lack these BN counters; they do not affect eval
    sha256: str | None = None  # of the file, when loaded from a path
    config: HRNetConfig | None = None  # carried by the checkpoint, if any


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True: a checkpoint file must not be able to run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights_only errors all end here
        raise CheckpointError(
            f"cannot read {path} as a weights-only torch checkpoint ({_load_error_reason(error)}). "
            "If it holds Python objects besides tensors, re-save just its state_dict."
        ) from None


def _load_error_reason(error: Exception) -> str:
    """The informative part of torch.load's long error: what the weights-only unpickler refused, if that."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text[text.index(marker) + len(marker):]
    reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {reason[:200]}"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Descend through wrapper dicts to the tensor mapping; returns it and the wrapper keys taken."""
    taken: list[str] = []
    while not _is_state_dict(obj):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state_dict")
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            shown = ", ".join(map(str, list(obj)[:LISTED_KEYS]))
            raise CheckpointError(f"no state_dict found in checkpoint; top-level keys: {shown}")
        taken.append(key)
        obj = obj[key]
    return dict(obj), taken


def normalise_keys(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Strip `module.` prefixes and map mmpose names to official ones."""
    stripped: list[str] = []
    while state_dict and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state_dict):
        state_dict = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state_dict.items()}
        stripped.append(DATA_PARALLEL_PREFIX)
    layout = "official"
    if any(k.startswith("backbone.") for k in state_dict):
        layout = "mmpose"
        renamed = {}
        for key, value in state_dict.items():
            for old, new in MMPOSE_RENAMES:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            renamed[key] = value
        state_dict = renamed
    return state_dict, stripped, layout


def _listing(kind: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:LISTED_KEYS])
    more = f" ... and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
    return f"{len(keys)} {kind}: {shown}{more}"


def _width_hint(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> str:
    """Name the width of the checkpoint's high-resolution branch, the usual cause of a mismatch."""
    given, expected = state_dict.get("final_layer.weight"), model.state_dict().get("final_layer.weight")
    if given is None or expected is None or given.dim() != 4 or given.shape[1] == expected.shape[1]:
        return ""
    return f" Hint: the checkpoint looks like HRNet-W{given.shape[1]}, the model is HRNet-W{expected.shape[1]}."


Mismatched = list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, the checkpoint's shape, the model's


def key_differences(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                    ) -> tuple[list[str], list[str], Mismatched]:
    """The model's keys the checkpoint lacks, the checkpoint's keys the model lacks, and the shared keys whose
    shapes differ: all empty when the checkpoint loads strictly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in state_dict and state_dict[k].shape != v.shape]
    return missing, unexpected, mismatched


def check_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointMismatch, with a message of a few lines, unless the keys and shapes match exactly."""
    missing, unexpected, mismatched = key_differences(model, state_dict)
    if not (missing or unexpected or mismatched):
        return
    expected = len(model.state_dict())
    parts = [f"checkpoint {source} does not fit the model ({len(state_dict)} tensors given, {expected} expected)"]
    if missing:
        parts.append(_listing("missing keys", missing))
    if unexpected:
        parts.append(_listing("unexpected keys", unexpected))
    if mismatched:
        parts.append(_listing("shape mismatches", [f"{k} {list(got)} vs model {list(want)}"
                                                   for k, got, want in mismatched]))
    message = "\n  ".join(parts) + "." + _width_hint(state_dict, model)
    raise CheckpointMismatch(message, missing, unexpected, mismatched)


def _fill_num_batches_tracked(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> int:
    """Checkpoints saved before torch 0.4.1 lack BN's counter; eval ignores it, so zero is safe."""
    filled = 0
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)
            filled += 1
    return filled


def read_checkpoint_config(obj: Any) -> HRNetConfig | None:
    """The architecture a checkpoint carries, if any: {'config': ...} or {'arch': name}.

    `config` may be an arch name, an `HRNetConfig.to_dict()`, or an official `MODEL` section.
    """
    if isinstance(obj, (str, os.PathLike)):
        obj = read_checkpoint_file(obj)
    if not isinstance(obj, Mapping):
        return None
    config = obj.get("config", obj.get("arch"))
    if isinstance(config, HRNetConfig):
        return config
    if isinstance(config, str):
        return get_config(config)
    if isinstance(config, Mapping):
        if "stage2" in config:
            return config_from_dict(config)
        if "EXTRA" in config:
            return config_from_official_model(config, name=str(config.get("NAME", "custom")))
        if "MODEL" in config:
            return config_from_official_model(config["MODEL"], name=str(config["MODEL"].get("NAME", "custom")))
        if "arch" in config:
            return get_config(str(config["arch"]))
    return None


def load_checkpoint(model: nn.Module, checkpoint: CheckpointSource, source: str | None = None) -> LoadReport:
    """Load a checkpoint (path or already-loaded object) into `model` strictly and report what was done.

    `source` names an in-memory checkpoint in messages (e.g. the file it was read from).
    """
    sha256 = None
    if isinstance(checkpoint, (str, os.PathLike)):
        source = str(checkpoint)
        obj = read_checkpoint_file(checkpoint)
        sha256 = file_sha256(checkpoint)
    else:
        source, obj = source or "<in-memory>", checkpoint
    state_dict, unwrapped = unwrap_state_dict(obj)
    state_dict, stripped, layout = normalise_keys(state_dict)
    filled = _fill_num_batches_tracked(model, state_dict)
    check_fits(model, state_dict, source)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:  # should not happen after check_fits; keep the message short anyway
        raise CheckpointError(f"checkpoint {source} failed to load: {str(error)[:1000]}") from None
    report = LoadReport(source=source, num_tensors=len(state_dict), layout=layout, unwrapped=unwrapped,
                        stripped_prefixes=stripped, filled_num_batches_tracked=filled, sha256=sha256,
                        config=read_checkpoint_config(obj))
    log.info("loaded %d tensors from %s (layout %s, unwrapped %s)", report.num_tensors, source, layout,
             unwrapped or "none")
    return report
