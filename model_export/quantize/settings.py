"""Every knob of `python -m model_export quantize`, in one object (the command line fills it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model_export.quantize.search import Target
from model_export.quantize.speed import SpeedProbe


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
    head_method: str | None = "minmax"  # the head's activation ranges (None: `method` everywhere)
    exclude: tuple[str, ...] = ()
    float_ends: bool = True  # first and heatmap convolutions in float (False: for measuring what that buys)
    search: bool = True  # the mixed-precision search when the target is not met
    float_budget: int = 8  # at most this many layers added to float by the search
    search_top_k: int = 3  # layers tried per search step (the noisiest of the per-layer report)
    target: Target = field(default_factory=Target)
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: for x86 CPUs without VNNI (see README)
    accept_low_agreement: bool = False
    allow_slower: bool = False
    speed_probe: SpeedProbe | None = None  # None: measure_speed (tests pass a probe to force either verdict)
    batch_size: int = 4
    seed: int = 0
