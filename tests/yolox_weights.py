"""Seeded YOLOX weights that both the official Megvii model and ours can be filled with: one torch generator walks
the keys in sorted order (ours are the official names, key for key) and draws each tensor from its name and shape.

Used by tests/fixtures/detection/make_yolox_fixtures.py on the official model (the fixture stores only the
official outputs) and by the tests on ours, so no weights are committed. BatchNorm statistics are perturbed away
from the identity (mean 0, var 1) on purpose: a loader that dropped or misplaced them would change the output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

STEM_KEY = "backbone.backbone.stem.conv.conv.weight"
STEM_GAIN = 1 / 128  # the stem sees BGR 0-255: keep its activations of order 1
PRED_PREFIXES = ("head.obj_preds", "head.cls_preds", "head.reg_preds")
PRED_GAIN = 6.0  # 1x1 predictions: spread the scores and boxes over the image instead of one value everywhere
PRED_BIAS = {"head.obj_preds": -2.0, "head.cls_preds": -1.0}  # sigmoid scores spread over (0, 1), not all 0.5


def seeded_state_dict(template: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A state_dict with `template`'s keys, shapes and dtypes, drawn from `seed` in sorted key order."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(template):
        like = template[key]
        shape = tuple(like.shape)
        if key.endswith("num_batches_tracked"):
            value = torch.zeros(shape, dtype=like.dtype)
        elif key.endswith("running_mean"):
            value = 0.2 * torch.randn(shape, generator=generator)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("bn.weight"):
            value = 0.8 + 0.4 * torch.rand(shape, generator=generator)
        elif key.endswith("bn.bias"):
            value = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 4:  # conv kernels, He-style so that activations neither vanish nor explode
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=generator) * math.sqrt(1.0 / fan_in)
            if key == STEM_KEY:
                value = value * STEM_GAIN
            elif key.startswith(PRED_PREFIXES):
                value = value * PRED_GAIN
        else:  # prediction biases
            offset = next((b for prefix, b in PRED_BIAS.items() if key.startswith(prefix)), 0.0)
            value = offset + 0.5 * torch.randn(shape, generator=generator)
        out[key] = value.to(like.dtype)
    return out
