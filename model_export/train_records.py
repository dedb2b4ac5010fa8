"""What a training run leaves in its --output-dir: the checkpoint files (written atomically) and metrics.csv."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "hrnet-pose-training-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.csv"
STAT_COLUMNS = ("val_ap", "val_ap50", "val_ap75", "val_ap_m", "val_ap_l", "val_ar", "val_ar50", "val_ar75",
                "val_ar_m", "val_ar_l")
METRIC_COLUMNS = ("epoch", "step", "epoch_complete", "lr", "loss", "images", "seconds", "images_per_s",
                  *STAT_COLUMNS)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically (temporary file, then rename), so an interrupted save never leaves a torn file."""
    staging = path.with_name(path.name + ".partial")
    torch.save(payload, staging)
    os.replace(staging, path)


class MetricsLog:
    """metrics.csv in the run folder: appended to on resume, header written once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists() or path.stat().st_size == 0:
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(METRIC_COLUMNS)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_csv_value(row.get(column)) for column in METRIC_COLUMNS])


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
