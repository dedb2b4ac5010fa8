"""How far a quantized model's answers are from its float parent's, on the same real crops.

Both models run through the service's backend (`OrtBackend`, real int8 kernels with all graph optimisations on)
and both heatmaps go through the official decode (`posecore.heatmaps.decode_heatmaps`: argmax, quarter-pixel
shift, inverse affine), so the distances are the ones a caller of the service would see, in image pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model_export.quantize.calibration import CropSet
from posecore.backend import OrtBackend
from posecore.heatmaps import decode_heatmaps

# Heatmap maxima above this are the joints the service's person score counts (as the official rescoring does).
CONFIDENT_SCORE = 0.2


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(sum ref^2 / sum (ref - cand)^2), in dB (capped at 150)."""
    ref = reference.astype(np.float64, copy=False)
    signal = float(np.square(ref).sum())
    noise = float(np.square(ref - candidate.astype(np.float64, copy=False)).sum())
    if noise <= signal * 1e-15:
        return 150.0
    if signal == 0.0:
        return -150.0
    return float(10.0 * np.log10(signal / noise))


@dataclass(frozen=True)
class Agreement:
    crops: int
    joints: int
    heatmap_sqnr_db: float
    worst_crop_sqnr_db: float
    median_px: float
    p95_px: float
    max_px: float
    within_one_heatmap_px: float  # share of joints whose two decoded positions are <= 1 heatmap pixel apart
    confident_joints: int  # joints whose float heatmap maximum is above CONFIDENT_SCORE
    confident_median_px: float | None  # None when no joint is confident (an untrained model)
    confident_p95_px: float | None
    max_score_diff: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        return (f"heatmap SQNR {self.heatmap_sqnr_db:.1f} dB (worst crop {self.worst_crop_sqnr_db:.1f}), keypoints "
                f"median {self.median_px:.2f} px, p95 {self.p95_px:.2f} px, {100 * self.within_one_heatmap_px:.1f}% "
                f"within one heatmap pixel ({self.crops} crops, {self.joints} joints)")


def compare_heatmaps(reference: np.ndarray, candidate: np.ndarray, crops: CropSet) -> Agreement:
    """Agreement of `candidate` heatmaps with `reference` ones (both (N, K, h, w)) for the persons of `crops`."""
    ref_points, ref_scores = decode_heatmaps(reference, crops.centers, crops.scales)
    cand_points, cand_scores = decode_heatmaps(candidate, crops.centers, crops.scales)
    distance = np.linalg.norm(ref_points.astype(np.float64) - cand_points, axis=2)  # (N, K) image pixels
    # One heatmap pixel in image pixels: the crop's width (scale[0] * 200 px) over the heatmap's width.
    heatmap_px = crops.scales[:, 0].astype(np.float64) * 200.0 / reference.shape[3]
    confident = ref_scores[..., 0] > CONFIDENT_SCORE
    per_crop = [sqnr_db(r, c) for r, c in zip(reference, candidate, strict=True)]
    conf = distance[confident]
    return Agreement(
        crops=len(reference),
        joints=int(distance.size),
        heatmap_sqnr_db=sqnr_db(reference, candidate),
        worst_crop_sqnr_db=float(min(per_crop)),
        median_px=float(np.median(distance)),
        p95_px=float(np.percentile(distance, 95)),
        max_px=float(distance.max()),
        within_one_heatmap_px=float(np.mean(distance <= heatmap_px[:, None])),
        confident_joints=int(conf.size),
        confident_median_px=float(np.median(conf)) if conf.size else None,
        confident_p95_px=float(np.percentile(conf, 95)) if conf.size else None,
        max_score_diff=float(np.abs(ref_scores - cand_scores).max()),
    )


def run_model(model_path: Path, inputs: np.ndarray, max_batch: int = 8) -> np.ndarray:
    """Heatmaps of `model_path` for `inputs`, through the service's backend on the CPU."""
    backend = OrtBackend(model_path, provider="cpu", max_batch=max_batch)
    step = backend.batch_sizes[-1]
    return np.concatenate([backend.infer(inputs[i:i + step]) for i in range(0, len(inputs), step)])
