"""The INT8 phase of the bench: a second service on the quantized model, measured in the same interleaved rounds
as the fp32 service, so that the speed-up is a ratio from one run on one machine state."""

from __future__ import annotations

from posecore.modelcard import ModelCard
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
