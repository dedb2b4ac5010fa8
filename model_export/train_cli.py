"""`python -m model_export train`: the command line over model_export.train."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from model_export.checkpoint import CheckpointError
from model_export.configs import ARCHS
from model_export.train import DEFAULT_ARCH, TrainSettings, train
from model_export.train_records import BEST_NAME, CHECKPOINT_NAME, METRICS_NAME

# ---- command line (`python -m model_export train ...`) -------------------------------------------------------

TRAIN_DESCRIPTION = f"""\
Train HRNet on COCO person keypoints. The defaults are the official W32 experiment
(w32_256x192_adam_lr1e-3): Adam lr 1e-3, lr x0.1 at epochs 170 and 200 of 210, batch 32, Gaussian heatmap
targets (sigma 2; 3 for 384x288) with JointsMSELoss and target weights, augmentation: random scale 0.35,
rotation 45 deg (p 0.6), horizontal flip, half body (p 0.3, > 8 joints). The crops and targets are built with
the service's own geometry (posecore.geometry, posecore.heatmaps), so training matches serving.

Output folder (--output-dir):
  {CHECKPOINT_NAME}  after every epoch and when --max-steps stops the run: config, weights, optimizer,
                 scheduler, AMP scaler, epoch/step and what it was trained on. --resume continues it;
                 `python -m model_export export --checkpoint DIR/{CHECKPOINT_NAME}` turns it into ONNX + card.
  {BEST_NAME}        the best validation AP so far (only with --val-annotations).
  {METRICS_NAME}    one row per epoch: loss, lr, images/s, the ten COCO stats when validated.
A progress bar shows the running loss and images/s.
"""

TRAIN_EPILOG = """\
Examples:
  # the official W32 recipe on COCO train2017, validated on val2017 every 10 epochs (GT boxes)
  python -m model_export train --arch w32_256x192 \\
      --annotations coco/annotations/person_keypoints_train2017.json --images coco/train2017 \\
      --val-annotations coco/annotations/person_keypoints_val2017.json --val-images coco/val2017 \\
      --output-dir runs/w32 --workers 8
  python -m model_export train --resume runs/w32/checkpoint.pt --annotations ... --images ... --output-dir runs/w32
  # a smoke test of the loop on the shared mini sets
  python -m model_export train --arch tiny --input-size 128 96 --no-augment \\
      --annotations ../shared/data/coco-mini/test_coco.json --images ../shared/data/coco-mini \\
      --output-dir runs/smoke --epochs 5 --batch-size 8 --workers 0
A model trained on a few images is a test of the loop, not a pose model: its exported card says so.
"""


def add_train_parser(subparsers: Any) -> None:
    """Register the `train` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "train", help="train HRNet on COCO keypoints (official W32 recipe by default)",
        description=TRAIN_DESCRIPTION, epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--annotations", type=Path, action="append", required=True, metavar="FILE",
                      help="COCO person-keypoints annotation JSON; repeat to train on several (with one --images "
                           "each, in the same order)")
    data.add_argument("--images", type=Path, action="append", required=True, metavar="DIR",
                      help="folder that the annotation file's file_name entries are relative to")
    data.add_argument("--val-annotations", type=Path, default=None, metavar="FILE",
                      help="validation annotations: COCO keypoint AP through the service pipeline")
    data.add_argument("--val-images", type=Path, default=None, metavar="DIR", help="validation image folder")
    data.add_argument("--val-detections", type=Path, default=None, metavar="FILE",
                      help="person detections for validation (default: ground-truth boxes)")
    data.add_argument("--val-every", type=int, default=10, metavar="N",
                      help="validate every N epochs and after the last (default 10)")
    data.add_argument("--val-flip", action=argparse.BooleanOptionalAction, default=True,
                      help="flip test in validation (default on)")
    data.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                      help="random scale/rotation/flip/half body (default on; --no-augment for fixed crops)")
    data.add_argument("--joint-weights", action="store_true",
                      help="the official per-joint loss weights (x1.2 elbows/knees, x1.5 wrists/ankles)")
    data.add_argument("--cache-images", action="store_true",
                      help="keep decoded images in memory (small sets only: smoke runs and tests)")
    data.add_argument("--workers", type=int, default=4, metavar="N", help="DataLoader worker processes (default 4)")

    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=ARCHS, default=None,
                       help=f"architecture (default {DEFAULT_ARCH}; with --resume, the checkpoint's)")
    model.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                       help="another input size, multiples of 32 (heatmaps H/4 x W/4), e.g. 128 96 for fast tests")
    model.add_argument("--sigma", type=float, default=None,
                       help="Gaussian target sigma in heatmap pixels (default: the arch's, 2 or 3)")
    model.add_argument("--pretrained", type=Path, default=None, metavar="PATH",
                       help="initialise from weights that match by name and shape (e.g. the ImageNet HRNet)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=210, help="epochs in all (default 210)")
    optim.add_argument("--batch-size", type=int, default=32, metavar="N", help="persons per step (default 32)")
    optim.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    optim.add_argument("--lr-steps", type=int, nargs="+", default=[170, 200], metavar="EPOCH",
                       help="epochs after which the lr is multiplied by --lr-factor (default 170 200)")
    optim.add_argument("--lr-factor", type=float, default=0.1, help="lr step factor (default 0.1)")
    optim.add_argument("--max-steps", type=int, default=None, metavar="N",
                       help="stop after N optimiser steps in all (counting resumed ones); a checkpoint is written")
    optim.add_argument("--seed", type=int, default=0, help="seed of the init, sample order and augmentation")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", type=Path, required=True, metavar="DIR", help="run folder, e.g. runs/w32")
    run.add_argument("--resume", type=Path, default=None, metavar="CKPT",
                     help="continue a run from its checkpoint.pt (weights, optimizer, scheduler, epoch, step)")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="torch CPU threads (default: one per core; 1 is much faster on a CPU shared with "
                          "other busy processes)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                     help="auto: CUDA when torch sees a GPU, else CPU")
    run.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                     help="float16 autocast + GradScaler (default: on with CUDA, off on CPU)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                     help="progress bar with loss and images/s (default on)")
    parser.set_defaults(run=run_train_command, parser=parser)


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if values.get("input_size") is not None:
        values["input_size"] = tuple(values["input_size"])
    values["lr_steps"] = tuple(values["lr_steps"])
    return TrainSettings(**values)


def run_train_command(args: argparse.Namespace) -> int:
    """Run `train` from parsed arguments; returns the process exit code."""
    if len(args.annotations) != len(args.images):
        args.parser.error("give one --images folder per --annotations file")
    if (args.val_annotations is None) != (args.val_images is None):
        args.parser.error("--val-annotations and --val-images go together")
    for path in [*args.annotations, *args.images, args.val_annotations, args.val_images, args.resume]:
        if path is not None and not path.exists():
            print(f"train: not found: {path}", file=sys.stderr)
            return 2
    try:
        result = train(settings_from_args(args))
    except (CheckpointError, ValueError, FloatingPointError, OSError) as error:
        print(f"train failed: {error}", file=sys.stderr)
        return 1
    last = result.history[-1]["loss"] if result.history and result.history[-1]["loss"] is not None else float("nan")
    print(f"trained to step {result.step} (epoch {result.epoch}); last epoch's mean loss {last:.4g}; "
          f"checkpoint {result.checkpoint}" + (f"; best val AP {result.best_ap:.4f}" if result.best_ap is not None
                                               else ""))
    return 0
