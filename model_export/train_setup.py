"""A training run's set-up that needs no run settings: the device, the arch at another input size, pretrained
weights, and the name a run gives its data."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from model_export.checkpoint import CheckpointError, normalise_keys, read_checkpoint_file, unwrap_state_dict
from model_export.configs import HRNetConfig
from model_export.hrnet import HRNet

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def config_with_input(config: HRNetConfig, input_size: tuple[int, int] | None, sigma: float | None) -> HRNetConfig:
    """The arch at another input size (heatmaps a quarter of it) and/or target sigma; renamed when resized."""
    changes: dict[str, Any] = {}
    if input_size is not None and tuple(input_size) != config.input_size:
        height, width = (int(v) for v in input_size)
        if height % 32 or width % 32:
            raise ValueError(f"input size {height}x{width}: both sides must be multiples of 32 (the four "
                             "branches halve the stride-4 heatmap three times)")
        changes |= {"name": f"{config.name.split('_')[0]}_{height}x{width}", "input_size": (height, width),
                    "heatmap_size": (height // 4, width // 4)}
    if sigma is not None:
        changes["sigma"] = float(sigma)
    return dataclasses.replace(config, **changes) if changes else config


def load_pretrained(model: HRNet, path: Path) -> None:
    """Initialise from e.g. the official ImageNet HRNet (hrnet_w32-36af842e.pth): every tensor whose name and
    shape match is loaded, the rest (classifier heads, the final heatmap layer) keeps the official init."""
    state_dict, _ = unwrap_state_dict(read_checkpoint_file(path))
    state_dict, _, _ = normalise_keys(state_dict)
    own = model.state_dict()
    matching = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise CheckpointError(f"{path}: no tensor matches the model by name and shape")
    model.load_state_dict(matching, strict=False)
    log.info("pretrained %s: %d of the model's %d tensors loaded, %d of the file's skipped", path, len(matching),
             len(own), len(state_dict) - len(matching))


def dataset_label(annotation_file: Path) -> str:
    """'coco-mini/test_coco.json': the folder and file name, enough to say what a model was trained on."""
    path = Path(annotation_file)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
