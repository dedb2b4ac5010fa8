"""Mixed precision to a target: which layers to keep in float so that the INT8 model agrees well enough.

No single layer of a real model may help in float by itself while several together do (their noise adds up), so
the search is cumulative and greedy: start from the all-int8 model (but for the fixed float layers), and at each
step try, one at a time on top of the layers already chosen, the `top_k` int8 layers that the per-layer report
says add the most noise; keep the one whose float version brings the held-out agreement closest to the target
(`Target.distance`: the shortfalls of all three figures; heatmap SQNR breaks ties) and repeat until the target is
met or `budget` layers are spent. A step where none of the tried layers helps moves on to the next `top_k` of the
ranking instead of keeping one; two such steps in a row end the search.
Every trial is a re-quantization with the same cached ranges (no calibration) and a run over the held-out crops,
so a step costs `top_k` quantizations: the default budget stays affordable on a 2-core CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model_export.quantize.agreement import Agreement
from model_export.quantize.layers import LayerError

log = logging.getLogger(__name__)

# The layers a float version can help: those with weights or a merge of quantized tensors (Clip/Relu fold into
# the convolution before them, so keeping one of those in float changes nothing).
SEARCHABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Concat")


@dataclass(frozen=True)
class Target:
    """What "agrees well enough" means, on the held-out crops (defaults: the issue's)."""

    max_median_px: float = 0.5  # median keypoint distance in image pixels
    min_within_one: float = 0.85  # share of joints within one heatmap pixel
    min_sqnr_db: float = 15.0  # heatmap SQNR

    def shortfalls(self, a: Agreement) -> list[str]:
        out = []
        if not a.median_px <= self.max_median_px:
            out.append(f"keypoint median {a.median_px:.2f} px > {self.max_median_px:g}")
        if not a.within_one_heatmap_px >= self.min_within_one:
            out.append(f"{100 * a.within_one_heatmap_px:.1f}% within one heatmap pixel < "
                       f"{100 * self.min_within_one:g}%")
        if not a.heatmap_sqnr_db >= self.min_sqnr_db:
            out.append(f"heatmap SQNR {a.heatmap_sqnr_db:.1f} dB < {self.min_sqnr_db:g}")
        return out

    def met(self, a: Agreement) -> bool:
        return not self.shortfalls(a)

    def distance(self, a: Agreement) -> float:
        """How far `a` is from the target, 0 when met: 10 dB of SQNR, 10 points of joints within one heatmap
        pixel and twice the median bound each count 1 (the keypoint figures move in steps, SQNR smoothly)."""
        return (max(0.0, self.min_sqnr_db - a.heatmap_sqnr_db) / 10.0
                + max(0.0, self.min_within_one - a.within_one_heatmap_px) * 10.0
                + max(0.0, a.median_px - self.max_median_px) / max(2.0 * self.max_median_px, 1e-6))

    def closer(self, a: Agreement, b: Agreement) -> bool:
        """Is `a` closer to the target than `b`? Less distance, or as far and a clearly better SQNR."""
        da, db = self.distance(a), self.distance(b)
        return da < db - 1e-9 or (abs(da - db) <= 1e-9 and a.heatmap_sqnr_db > b.heatmap_sqnr_db + 0.1)

    def as_dict(self) -> dict[str, float]:
        return {"max_median_px": self.max_median_px, "min_within_one_heatmap_px": self.min_within_one,
                "min_heatmap_sqnr_db": self.min_sqnr_db}

    def describe(self) -> str:
        return (f"median <= {self.max_median_px:g} px, >= {100 * self.min_within_one:g}% within one heatmap pixel, "
                f"heatmap SQNR >= {self.min_sqnr_db:g} dB")


@dataclass(frozen=True)
class Step:
    """One layer the search kept in float, and what that bought on the held-out crops."""

    layer: str
    op_type: str
    before: Agreement
    after: Agreement

    def bought(self) -> str:
        b, a = self.before, self.after
        return (f"heatmap SQNR {b.heatmap_sqnr_db:.1f} -> {a.heatmap_sqnr_db:.1f} dB, keypoint median "
                f"{b.median_px:.2f} -> {a.median_px:.2f} px, within one heatmap pixel "
                f"{100 * b.within_one_heatmap_px:.1f} -> {100 * a.within_one_heatmap_px:.1f}%")


@dataclass
class SearchResult:
    model: Path
    agreement: Agreement
    steps: list[Step] = field(default_factory=list)
    trials: int = 0
    met: bool = False


Quantize = Callable[[list[str], Path], Path]  # float layers, output path -> the QDQ model
Evaluate = Callable[[Path], Agreement]  # a QDQ model -> its agreement on the held-out crops


def rank_candidates(errors: list[LayerError], fixed: set[str]) -> list[LayerError]:
    """int8 layers that could go to float, the most noise added first."""
    return sorted((e for e in errors if e.int8 and e.op_type in SEARCHABLE_OPS and e.name not in fixed),
                  key=lambda e: e.added_db)


def search(quantize: Quantize, evaluate: Evaluate, fixed: list[str], start: Path, start_agreement: Agreement,
           ranking: list[LayerError], target: Target, budget: int, top_k: int, work: Path) -> SearchResult:
    """Greedy cumulative search from `start` (quantized with `fixed` in float); see the module docstring."""
    result = SearchResult(start, start_agreement, met=target.met(start_agreement))
    remaining = list(ranking)
    unhelpful = 0
    while not result.met and len(result.steps) < budget and remaining and unhelpful < 2:
        chosen = [step.layer for step in result.steps]
        tried = []
        for candidate in remaining[:top_k]:
            path = quantize([*fixed, *chosen, candidate.name], work / f"search{result.trials}.onnx")
            result.trials += 1
            agreement = evaluate(path)
            log.info("search step %d: %s in float -> %s", len(result.steps) + 1, candidate.name, agreement.summary())
            tried.append((agreement, candidate, path))
        agreement, best, path = min(tried, key=lambda t: (target.distance(t[0]), -t[0].heatmap_sqnr_db))
        if not target.closer(agreement, result.agreement):
            remaining = remaining[top_k:]  # none of these helps on top of the chosen ones: look further down
            unhelpful += 1
            continue
        unhelpful = 0
        result.steps.append(Step(best.name, best.op_type, result.agreement, agreement))
        remaining.remove(best)
        result.model, result.agreement, result.met = path, agreement, target.met(agreement)
    return result


