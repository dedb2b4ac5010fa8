"""Load a YOLOX checkpoint of either published layout into `model.YOLOX`, strictly, refusing in one line.

- Megvii-BaseDetection/YOLOX (`{'model': state_dict, ...}`): keys as our modules name them
  (`backbone.backbone.dark2...`, `backbone.lateral_conv0...`, `head.cls_preds...`).
- mmdetection (`{'state_dict': ..., 'meta': ...}`): keys `backbone.stem/stageN`, `neck.reduce_layers...`,
  `neck.out_convs...`, `bbox_head.multi_level_conv_cls...`. Renamed to Megvii's by inverting mmdetection's own
  converter (tools/model_converters/yolox2mmdet.py). mmdetection 2.x checkpoints trained with its EMA hook also
  hold `ema_<key with dots as underscores>` buffers: a complete mirror of the model is dropped (mmdetection's
  own loader ignores them too); an incomplete one is refused like any unexpected key.

The layout also says which framework trained the weights, hence which letterbox the detector card asks for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from model_export.checkpoint import (
    CheckpointError,
    CheckpointMismatch,
    key_differences,
    unwrap_state_dict,
)
from model_export.yolox.model import YOLOX

log = logging.getLogger(__name__)

LISTED_KEYS = 3
EMA_PREFIX = "ema_"

# mmdetection name -> Megvii name, applied in order to the part after the top-level prefix.
_CSP_PARTS = (("main_conv", "conv1"), ("short_conv", "conv2"), ("final_conv", "conv3"), ("blocks", "m"))
_NECK_BLOCKS = (("reduce_layers.0", "lateral_conv0"), ("reduce_layers.1", "reduce_conv1"),
                ("downsamples.0", "bu_conv2"), ("downsamples.1", "bu_conv1"),
                ("top_down_blocks.0", "C3_p4"), ("top_down_blocks.1", "C3_p3"),
                ("bottom_up_blocks.0", "C3_n3"), ("bottom_up_blocks.1", "C3_n4"))
_HEAD_PARTS = (("multi_level_cls_convs", "cls_convs"), ("multi_level_reg_convs", "reg_convs"),
               ("multi_level_conv_cls", "cls_preds"), ("multi_level_conv_reg", "reg_preds"),
               ("multi_level_conv_obj", "obj_preds"))
_STAGE = re.compile(r"^backbone\.stage([1-4])\.")


@dataclass(frozen=True)
class YoloxLoadReport:
    layout: str  # "megvii" or "mmdet"
    num_tensors: int
    dropped_ema: int


def _rename_csp(rest: str) -> str:
    """Inside a CSP layer: main/short/final conv and blocks -> conv1/conv2/conv3 and m (the bottlenecks' own
    conv1/conv2 keep their names, as in the converter)."""
    head, _, tail = rest.partition(".")
    for mm, megvii in _CSP_PARTS:
        if head == mm:
            return f"{megvii}.{tail}"
    return rest


def mmdet_to_megvii_key(key: str) -> str:
    """One mmdetection YOLOX key -> the Megvii key (the inverse of yolox2mmdet.py's renaming)."""
    stage = _STAGE.match(key)
    if stage:  # backbone.stageN.I.rest -> backbone.backbone.dark{N+1}.I.rest; I == 1 is a CSP layer except SPP
        index, _, rest = key[stage.end():].partition(".")
        number = int(stage.group(1))
        spp = number == 4 and index == "1"
        if not spp and index != "0":
            rest = _rename_csp(rest)
        return f"backbone.backbone.dark{number + 1}.{index}.{rest}"
    if key.startswith("backbone.stem."):
        return "backbone." + key
    if key.startswith("neck.out_convs."):
        return "head.stems." + key[len("neck.out_convs."):]
    if key.startswith("neck."):
        rest = key[len("neck."):]
        for mm, megvii in _NECK_BLOCKS:
            if rest.startswith(mm + "."):
                inner = rest[len(mm) + 1:]
                return f"backbone.{megvii}.{_rename_csp(inner) if megvii.startswith('C3') else inner}"
        return "backbone." + rest
    if key.startswith("bbox_head."):
        rest = key[len("bbox_head."):]
        for mm, megvii in _HEAD_PARTS:
            if rest.startswith(mm + "."):
                return f"head.{megvii}.{rest[len(mm) + 1:]}"
        return "head." + rest
    return key


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    if any(k.startswith(("bbox_head.", "neck.")) for k in state_dict):
        return "mmdet"
    return "megvii"


def _drop_ema_mirror(state_dict: dict[str, torch.Tensor]) -> int:
    """Remove mmdetection 2.x's `ema_*` buffers when they mirror the model's keys exactly; 0 when there are none."""
    ema = [k for k in state_dict if k.startswith(EMA_PREFIX)]
    if not ema:
        return 0
    mirror = {EMA_PREFIX + k.replace(".", "_") for k in state_dict if not k.startswith(EMA_PREFIX)}
    if set(ema) != mirror:
        return 0  # not a clean mirror: left in place, so the strict check names the odd keys
    for key in ema:
        del state_dict[key]
    return len(ema)


def _listing(kind: str, keys: list[str]) -> str:
    more = f" (+{len(keys) - LISTED_KEYS} more)" if len(keys) > LISTED_KEYS else ""
    return f"{len(keys)} {kind} ({', '.join(keys[:LISTED_KEYS])}{more})"


def check_fits_one_line(model: YOLOX, state_dict: Mapping[str, torch.Tensor], source: str, layout: str) -> None:
    """CheckpointMismatch with a one-line message unless keys and shapes match the model exactly."""
    missing, unexpected, mismatched = key_differences(model, state_dict)
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if mismatched:
        parts.append(_listing("shape mismatches", [f"{k} {list(got)} vs {list(want)}" for k, got, want in mismatched]))
    if missing:
        parts.append(_listing("missing keys", missing))
    if unexpected:
        parts.append(_listing("unexpected keys", unexpected))
    message = (f"checkpoint {source} ({layout} layout, {len(state_dict)} tensors) is not a {model.config.name} "
               f"with {model.config.num_classes} classes: " + "; ".join(parts))
    raise CheckpointMismatch(message, missing, unexpected, mismatched)


def load_yolox_checkpoint(model: YOLOX, checkpoint: Any, source: str) -> YoloxLoadReport:
    """Load an already-read checkpoint object into `model` strictly; CheckpointError (one line) otherwise."""
    state_dict, _ = unwrap_state_dict(checkpoint)
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    dropped = _drop_ema_mirror(state_dict)
    layout = detect_layout(state_dict)
    if layout == "mmdet":
        state_dict = {mmdet_to_megvii_key(k): v for k, v in state_dict.items()}
    check_fits_one_line(model, state_dict, source, layout)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:  # not expected after the check; kept to one line anyway
        raise CheckpointError(f"checkpoint {source} failed to load: {str(error).splitlines()[0]}") from None
    log.info("loaded %d tensors from %s (%s layout%s)", len(state_dict), source, layout,
             f", {dropped} EMA buffers dropped" if dropped else "")
    return YoloxLoadReport(layout=layout, num_tensors=len(state_dict), dropped_ema=dropped)
