"""The INT8 phase of the bench: a second service on the quantized model, measured in the same interleaved rounds
as the fp32 service, so that the speed-up is a ratio from one run on one machine state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from posecore.backend import OrtBackend
from posecore.modelcard import ModelCard, read_card
from service.bench.baselines import model_only
from service.bench.stats import Phase

TARGET_SPEEDUP = 1.7  # issue 14: INT8 W32 service crops/s over the fp32 service's, 4 clients, 2-core CPU


def int8_ratios(phases: dict[str, Phase]) -> dict[str, float]:
    if "int8_service_multi" not in phases:
        return {}
    out = {
        "int8_ceiling_over_fp32_ceiling": phases["int8_ceiling"].crops_per_s / phases["ceiling"].crops_per_s,
        "int8_service_single_over_fp32_service": (phases["int8_service_single"].crops_per_s
                                                  / phases["service_single"].crops_per_s),
        "int8_service_multi_over_fp32_service": (phases["int8_service_multi"].crops_per_s
                                                 / phases["service_multi"].crops_per_s),
        "int8_service_single_over_int8_ceiling": (phases["int8_service_single"].crops_per_s
                                                  / phases["int8_ceiling"].crops_per_s),
        "int8_service_multi_over_int8_ceiling": (phases["int8_service_multi"].crops_per_s
                                                 / phases["int8_ceiling"].crops_per_s),
    }
    return {k: round(v, 3) for k, v in out.items()}


def int8_verdicts(r: dict[str, float], clients: int) -> dict[str, bool]:
    if "int8_service_multi_over_fp32_service" not in r:
        return {}
    return {
        f"INT8 service >= {TARGET_SPEEDUP} x fp32 service ({clients} clients, multi-person)":
            r["int8_service_multi_over_fp32_service"] >= TARGET_SPEEDUP,
        f"INT8 service >= {TARGET_SPEEDUP} x fp32 service ({clients} clients, single-person)":
            r["int8_service_single_over_fp32_service"] >= TARGET_SPEEDUP,
    }


def describe_int8(card: ModelCard) -> str:
    """One line on what the INT8 model is and how closely it agrees with its parent (from its card)."""
    q = card.quantization
    if q is None:
        return f"INT8 model `{card.name}`: its card has no quantization record."
    a = q.agreement
    return (f"INT8 model `{card.name}` (precision {card.precision}, {q.method}, {len(q.float_layers)} layers in "
            f"float); agreement with fp32 on {a.get('crops')} held-out crops: heatmap SQNR "
            f"{a.get('heatmap_sqnr_db')} dB, keypoints median {a.get('median_px')} px, p95 {a.get('p95_px')} px, "
            f"within one heatmap pixel {a.get('within_one_heatmap_px')}.")


# ---- INT8 pairs: every (float32, INT8) model pair measured in the same rounds, raw ONNX Runtime, one batch -------

PAIR_BATCH = 4  # what `python -m model_export quantize` times with (a fixed-batch model uses its own)


@dataclass
class Int8Pair:
    """A float32 model and its INT8 derivative, timed alike: raw ONNX Runtime at one batch size, same threads."""

    key: str
    fp32: OrtBackend
    int8: OrtBackend
    card: ModelCard  # the INT8 model's card (agreement, float layers, the quantizer's own speed figure)
    parent_card: ModelCard
    batch: int

    @classmethod
    def open(cls, key: str, fp32: Path, int8: Path) -> Int8Pair:
        backends = [OrtBackend(path, provider="cpu", max_batch=PAIR_BATCH) for path in (fp32, int8)]
        batch = backends[0].batch_sizes[-1] if len(backends[0].batch_sizes) == 1 else PAIR_BATCH
        return cls(key, backends[0], backends[1], read_card(int8, backends[1])[0], read_card(fp32, backends[0])[0],
                   batch)

    def phases(self, slice_s: float) -> dict[str, Phase]:
        return {f"{self.key}_fp32": model_only(self.fp32, self.batch, slice_s),
                f"{self.key}_int8": model_only(self.int8, self.batch, slice_s)}

    def row(self, phases: dict[str, Phase]) -> str:
        """One markdown row: what the INT8 model is, its agreement, AP where a card knows it, and the speed."""
        fp32, int8 = phases[f"{self.key}_fp32"], phases[f"{self.key}_int8"]
        q = self.card.quantization
        a = q.agreement if q else {}
        searched = len(q.search) if q else 0
        recorded = q.speed.get("int8_over_parent") if q and q.speed else None
        ap = self.parent_card.weights.ap
        within = a.get("within_one_heatmap_px")
        untrained = "" if self.parent_card.trained else ", untrained: agreement meaningless"
        return (f"| `{self.card.name}` ({self.card.arch}{untrained}) | {_number(a.get('heatmap_sqnr_db'), '.1f')} dB | "
                f"{_number(a.get('median_px'), '.2f')} / {_number(a.get('p95_px'), '.1f')} | "
                f"{_number(None if within is None else 100 * within, '.1f')}% | "
                f"{len(q.float_layers) if q else 0} ({searched} by the search) | "
                f"{ap if ap is not None else 'unknown'} | "
                f"{fp32.crops_per_s:.1f} | {int8.crops_per_s:.1f} | **{int8.crops_per_s / fp32.crops_per_s:.2f}x** | "
                f"{_number(recorded, '.2f')}x |")


def _number(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


PAIR_HEADER = ["| INT8 model | heatmap SQNR | keypoints median / p95 (px) | within 1 heatmap px | float layers | "
               "parent AP (card) | fp32 crops/s | INT8 crops/s | INT8 / fp32 (this run) | INT8 / fp32 (quantize) |",
               "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]


def pair_table(pairs: list[Int8Pair], phases: dict[str, Phase]) -> list[str]:
    if not pairs:
        return []
    batches = sorted({p.batch for p in pairs})
    return ["", f"INT8 models against their float32 parents (raw ONNX Runtime, batch {batches}, same rounds; "
                "agreement on each card's held-out crops):", "", *PAIR_HEADER,
            *(pair.row(phases) for pair in pairs)]
