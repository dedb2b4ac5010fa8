"""`python -m model_export train`: HRNet on COCO person keypoints, the official W32 experiment by default.

Official recipe (leoxiaobin experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml): Adam, lr 1e-3, the lr x0.1
at epochs 170 and 200, 210 epochs, batch 32 per GPU (x4 GPUs there), JointsMSELoss with target weights, the
augmentation of model_export.data (scale 0.35, rotation 45 deg with p 0.6, flip, half body p 0.3).

A run writes into --output-dir: checkpoint.pt (after every epoch and when stopped by --max-steps; it carries
the config, weights, optimizer, scheduler, AMP scaler, epoch, step and a summary of the training data, and
`--resume` continues from it), best.pt (the best validation AP, when validating) and metrics.csv (one row per
epoch: loss, lr, images/s, and the ten COCO stats when validated).

Differences from the official loop, on purpose: the scheduler steps after each epoch (the official code calls
it first, which with torch >= 1.1 drops the lr one epoch early and warns); AMP (float16 autocast + GradScaler)
is on by default on GPU; augmentation randomness is per sample, seeded by (seed, epoch, index).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from model_export.checkpoint import CheckpointError, read_checkpoint_file
from model_export.configs import HRNetConfig, config_from_dict, get_config
from model_export.data.dataset import OFFICIAL_JOINT_WEIGHTS, Augmentation, CocoKeypointDataset, load_person_records
from model_export.hrnet import HRNet, build_hrnet
from model_export.loss import JointsMSELoss
from model_export.train_records import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    METRICS_NAME,
    STAT_COLUMNS,
    MetricsLog,
    save_checkpoint,
)
from model_export.train_setup import config_with_input, dataset_label, load_pretrained, resolve_device

log = logging.getLogger(__name__)

DEFAULT_ARCH = "w32_256x192"


@dataclass
class TrainSettings:
    """Everything a run needs; the CLI fills it from its flags (see `train --help`)."""

    annotations: Sequence[Path]
    images: Sequence[Path]
    output_dir: Path
    arch: str | None = None  # None: the resumed checkpoint's config, else DEFAULT_ARCH
    input_size: tuple[int, int] | None = None  # (height, width) override; heatmaps are a quarter of it
    sigma: float | None = None  # Gaussian target sigma override (config: 2, 3 for 384x288)
    val_annotations: Path | None = None
    val_images: Path | None = None
    val_detections: Path | None = None
    val_every: int = 10
    val_flip: bool = True
    epochs: int = 210
    batch_size: int = 32
    lr: float = 1e-3
    lr_steps: Sequence[int] = (170, 200)
    lr_factor: float = 0.1
    resume: Path | None = None
    pretrained: Path | None = None
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA, off on CPU
    max_steps: int | None = None
    workers: int = 4
    threads: int | None = None  # torch CPU threads (None: torch's default, one per core)
    seed: int = 0
    augment: bool = True
    joint_weights: bool = False
    cache_images: bool = False
    progress: bool = True


@dataclass
class TrainResult:
    checkpoint: Path
    step: int
    epoch: int  # the next epoch to run
    losses: list[float] = field(default_factory=list)  # every step of this run, in order
    history: list[dict] = field(default_factory=list)  # the metrics.csv rows of this run
    best_ap: float | None = None


class EpochSampler(Sampler[int]):
    """A permutation of the dataset drawn from (seed, epoch), starting at `start`: a resumed epoch continues
    with exactly the samples it had not seen yet."""

    def __init__(self, size: int, seed: int, epoch: int, start: int = 0) -> None:
        self.order = np.random.default_rng((seed, epoch, 0x5A3)).permutation(size)[start:]

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self.order)

    def __len__(self) -> int:
        return len(self.order)


# ---- set-up -------------------------------------------------------------------------------------------------

def build_train_set(settings: TrainSettings, config: HRNetConfig) -> tuple[CocoKeypointDataset, list[dict]]:
    """All annotation files' persons in one dataset, plus a description of each file for the checkpoint."""
    if len(settings.annotations) != len(settings.images) or not settings.annotations:
        raise ValueError("give one --images folder per --annotations file (and at least one of each)")
    aspect = config.input_size[1] / config.input_size[0]
    records, described = [], []
    for annotation_file, image_dir in zip(settings.annotations, settings.images, strict=True):
        own = load_person_records(annotation_file, image_dir, aspect, config.num_joints)
        records.extend(own)
        described.append({"annotations": dataset_label(annotation_file), "persons": len(own),
                          "images": len({r.image_id for r in own})})
    if not records:
        raise ValueError("the annotation files hold no person with keypoints")
    dataset = CocoKeypointDataset(
        records, config, augmentation=Augmentation() if settings.augment else None,
        joint_weights=OFFICIAL_JOINT_WEIGHTS if settings.joint_weights else None, seed=settings.seed,
        cache_images=settings.cache_images)
    return dataset, described


# ---- checkpoints --------------------------------------------------------------------------------------------

def plain_settings(settings: TrainSettings) -> dict[str, Any]:
    """The settings as plain values (weights-only checkpoints hold no Path objects)."""
    out = {}
    for key, value in dataclasses.asdict(settings).items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (list, tuple)):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[key] = value
    return out


# ---- validation ---------------------------------------------------------------------------------------------

def validate(model: HRNet, config: HRNetConfig, settings: TrainSettings, device: torch.device,
             amp: bool) -> dict[str, float]:
    """COCO keypoint stats of the in-memory model through the service pipeline (model_export.evaluate)."""
    from model_export.evaluate import LocalRunner, card_for_config, evaluate

    @torch.no_grad()
    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            maps = model(torch.from_numpy(batch).to(device))
        return maps.float().cpu().numpy()

    annotations, images = settings.val_annotations, settings.val_images
    if annotations is None or images is None:
        raise ValueError("validation needs --val-annotations and --val-images")
    was_training = model.training
    model.eval()
    try:
        card = card_for_config(config)
        runner = LocalRunner(card, infer, max_batch=max(settings.batch_size, 8))
        result = evaluate(annotations, images, runner, card, settings.val_detections, flip=settings.val_flip)
    finally:
        model.train(was_training)
    return result.stats


# ---- the loop -----------------------------------------------------------------------------------------------

def train(settings: TrainSettings) -> TrainResult:
    """Run (or resume) a training; returns where the checkpoint is and what the loss did."""
    previous_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _train(settings)
    finally:
        torch.set_num_threads(previous_threads)


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress (or next)
    epoch_step: int = 0  # steps done in it
    step: int = 0  # optimiser steps in all
    images_seen: int = 0
    best_ap: float | None = None


@dataclass
class Run:
    """The objects of one training run."""

    settings: TrainSettings
    config: HRNetConfig
    model: HRNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool
    progress: Progress
    dataset: CocoKeypointDataset | None = None
    described: list[dict] = field(default_factory=list)

    def stop_requested(self) -> bool:
        return self.settings.max_steps is not None and self.progress.step >= self.settings.max_steps

    def checkpoint(self) -> dict:
        p = self.progress
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else None,
            "epoch": p.epoch, "epoch_step": p.epoch_step, "step": p.step, "best_ap": p.best_ap,
            "training": {"steps": p.step, "epochs_completed": p.epoch, "images_seen": p.images_seen,
                         "batch_size": self.settings.batch_size, "datasets": self.described,
                         "persons": len(self.dataset) if self.dataset is not None else 0,
                         "augmentation": self.settings.augment, "device": self.device.type, "amp": self.amp},
            "settings": plain_settings(self.settings),
        }


def start_run(settings: TrainSettings) -> Run:
    """Model, optimiser, schedule and AMP scaler: fresh (official init, optional --pretrained) or resumed."""
    device = resolve_device(settings.device)
    amp = device.type == "cuda" if settings.amp is None else bool(settings.amp)
    if amp and device.type != "cuda":
        raise ValueError("--amp needs a CUDA device")
    torch.manual_seed(settings.seed)
    resumed = read_checkpoint_file(settings.resume) if settings.resume else None
    if resumed is not None:
        if resumed.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{settings.resume} is not a training checkpoint of this trainer (use "
                                  "--pretrained to start from other weights)")
        config = config_from_dict(resumed["config"])
        if settings.arch is not None and get_config(settings.arch).stages != config.stages:
            raise ValueError(f"--arch {settings.arch} but the checkpoint holds {config.name}")
    else:
        config = config_with_input(get_config(settings.arch or DEFAULT_ARCH), settings.input_size, settings.sigma)

    model = build_hrnet(config, seed=settings.seed)
    if settings.pretrained and resumed is None:
        load_pretrained(model, settings.pretrained)
    if resumed is not None:
        model.load_state_dict(resumed["state_dict"], strict=True)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(settings.lr_steps), settings.lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    progress = Progress()
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        if amp and resumed.get("scaler"):
            scaler.load_state_dict(resumed["scaler"])
        progress = Progress(int(resumed["epoch"]), int(resumed["epoch_step"]), int(resumed["step"]),
                            int(resumed.get("training", {}).get("images_seen", 0)), resumed.get("best_ap"))
        log.info("resumed %s at epoch %d, step %d", settings.resume, progress.epoch + 1, progress.step)
    return Run(settings, config, model, optimizer, scheduler, scaler, device, amp, progress)


def run_epoch(run: Run, loss_fn: nn.Module, steps_per_epoch: int, losses: list[float]) -> dict[str, Any]:
    """Train the rest of the current epoch (or until --max-steps); returns its metrics row."""
    settings, progress, device, dataset = run.settings, run.progress, run.device, run.dataset
    if dataset is None:
        raise RuntimeError("run_epoch before the training set was built")
    dataset.set_epoch(progress.epoch)
    sampler = EpochSampler(len(dataset), settings.seed, progress.epoch,
                           start=progress.epoch_step * settings.batch_size)
    loader = DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, num_workers=settings.workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    run.model.train()
    started, images, loss_sum, loss_count = time.perf_counter(), 0, 0.0, 0
    bar = _progress_bar(settings, total=steps_per_epoch, initial=progress.epoch_step,
                        desc=f"epoch {progress.epoch + 1}/{settings.epochs}")
    for batch in loader:
        inputs = batch["input"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        weight = batch["target_weight"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=run.amp):
            outputs = run.model(inputs)
        loss = loss_fn(outputs, target, weight)  # float32 even under autocast
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss is {value} at step {progress.step + 1}: stopping (lower --lr?)")
        progress.step, progress.epoch_step = progress.step + 1, progress.epoch_step + 1
        progress.images_seen += len(inputs)
        images, loss_sum, loss_count = images + len(inputs), loss_sum + value, loss_count + 1
        losses.append(value)
        if bar is not None:
            bar.set_postfix(loss=f"{loss_sum / loss_count:.3g}",
                            img_s=f"{images / (time.perf_counter() - started):.1f}",
                            lr=f"{run.optimizer.param_groups[0]['lr']:.1e}", refresh=False)
            bar.update(1)
        if run.stop_requested():
            break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    return {"epoch": progress.epoch + 1, "step": progress.step,
            "epoch_complete": int(progress.epoch_step >= steps_per_epoch),
            "lr": run.optimizer.param_groups[0]["lr"], "loss": loss_sum / loss_count if loss_count else None,
            "images": images, "seconds": seconds, "images_per_s": images / seconds if seconds > 0 else None}


def _train(settings: TrainSettings) -> TrainResult:
    output_dir = Path(settings.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run = start_run(settings)
    run.dataset, run.described = build_train_set(settings, run.config)
    loss_fn = JointsMSELoss(use_target_weight=True)
    metrics = MetricsLog(output_dir / METRICS_NAME)
    steps_per_epoch = math.ceil(len(run.dataset) / settings.batch_size)
    log.info("training %s (%dx%d input) on %d persons (%s), %d steps/epoch, device %s%s", run.config.name,
             *run.config.input_size, len(run.dataset), ", ".join(d["annotations"] for d in run.described),
             steps_per_epoch, run.device, ", AMP" if run.amp else "")
    result = TrainResult(checkpoint=output_dir / CHECKPOINT_NAME, step=run.progress.step, epoch=run.progress.epoch)

    while run.progress.epoch < settings.epochs and not run.stop_requested():
        row = run_epoch(run, loss_fn, steps_per_epoch, result.losses)
        improved = False
        if row["epoch_complete"]:
            run.progress.epoch, run.progress.epoch_step = run.progress.epoch + 1, 0
            run.scheduler.step()
            improved = _maybe_validate(run, row)
        metrics.write(row)
        result.history.append(row)
        save_checkpoint(output_dir / CHECKPOINT_NAME, run.checkpoint())
        if improved:
            save_checkpoint(output_dir / BEST_NAME, run.checkpoint())
        log.info("epoch %d%s: loss %.4g, %.1f images/s%s, checkpoint %s", row["epoch"],
                 "" if row["epoch_complete"] else f" (stopped at step {row['step']})",
                 row["loss"] if row["loss"] is not None else float("nan"), row["images_per_s"] or 0.0,
                 f", val AP {row['val_ap']:.4f}" if row.get("val_ap") is not None else "", result.checkpoint)
    if not result.checkpoint.exists():  # nothing left to run (e.g. resumed at the end) into a new folder
        save_checkpoint(result.checkpoint, run.checkpoint())
    result.step, result.epoch, result.best_ap = run.progress.step, run.progress.epoch, run.progress.best_ap
    return result


def _maybe_validate(run: Run, row: dict) -> bool:
    """Validate every --val-every epochs and after the last; fills the row's stats; True on a new best AP."""
    settings, epochs_done = run.settings, run.progress.epoch
    if settings.val_annotations is None:
        return False
    if epochs_done % max(settings.val_every, 1) and epochs_done != settings.epochs:
        return False
    stats = validate(run.model, run.config, settings, run.device, run.amp)
    row.update(zip(STAT_COLUMNS, stats.values(), strict=True))
    if run.progress.best_ap is None or stats["AP"] > run.progress.best_ap:
        run.progress.best_ap = stats["AP"]
        return True
    return False


def _progress_bar(settings: TrainSettings, total: int, initial: int, desc: str):

    if not settings.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True, mininterval=1.0)
