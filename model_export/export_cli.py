"""`python -m model_export export`: the command line over model_export.export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from model_export.checkpoint import CheckpointError, read_checkpoint_config
from model_export.configs import ARCHS
from model_export.export import (
    BATCH_AXIS,
    INPUT_NAME,
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT_NAME,
    RELATIVE_TOLERANCE,
    ExportCheckFailed,
    export_onnx,
)
from model_export.yolox.cli import run_detector_export
from model_export.yolox.configs import YOLOX_ARCHS, is_yolox_arch
from posecore.modelcard import card_path_for

EXPORT_DESCRIPTION = f"""\
Export an HRNet pose network to ONNX, verify it, and write its model card.

What is exported: the top-down HRNet ({', '.join(ARCHS)}). The ONNX graph takes
  input    "{INPUT_NAME}"    float32 (N, 3, H, W): an RGB person crop, /255, ImageNet mean/std normalised
  output   "{OUTPUT_NAME}" float32 (N, 17, H/4, W/4): one heatmap per COCO keypoint, official order
and its first axis is the dynamic batch axis "{BATCH_AXIS}", so the service can run any number of crops in
one call. Opset >= {MIN_OPSET}; the legacy TorchScript exporter is used.

Before the file is kept, the ONNX checker runs and ONNX Runtime (CPU) is compared with torch on batches of
1 and 3; the max abs difference is printed and must be below {RELATIVE_TOLERANCE:g} x max |output|.

Model card: NAME.json is written beside NAME.onnx. It records the arch, whether the weights are trained,
input/output sizes and names, normalisation, the 17 keypoint names, flip pairs and skeleton, the weights'
source and sha256 (or the seed), the ONNX sha256, opset, tool versions and the export check. The service
reads it to know how to feed and decode the model.

--random-init gives an UNTRAINED model: the official random initialisation (reproducible with --seed).
Its keypoints are meaningless; it exists to test the plumbing and to benchmark speed. Every message of
such an export says UNTRAINED, and so do the card and the ONNX metadata.
"""

EXPORT_EPILOG = """\
Real weights, from an official checkpoint to a running service:
  1. download an official checkpoint, e.g. pose_hrnet_w32_256x192.pth from the model zoo of
     leoxiaobin/deep-high-resolution-net.pytorch (mmpose HRNet checkpoints and our own training
     checkpoints load too; DataParallel 'module.' prefixes are removed);
  2. python -m model_export export --arch w32_256x192 \\
         --checkpoint pose_hrnet_w32_256x192.pth --output models/hrnet_w32_256x192.onnx
  3. python -m service --model models/hrnet_w32_256x192.onnx   (or: make serve)
A checkpoint of another architecture is refused with a short list of missing/unexpected keys.

The person detector: --arch yolox_tiny|yolox_s|yolox_m|yolox_l|yolox_x with a Megvii (`{'model': ...}`) or
mmdetection (`{'state_dict': ...}`) YOLOX checkpoint writes the official YOLOX ONNX layout (input `images`,
output `output`, dynamic batch) and its detector card, which names the letterbox the weights expect.
"""


def add_export_parser(subparsers: Any) -> None:
    """Register the `export` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "export", help="HRNet checkpoint (or UNTRAINED random init) -> ONNX + model card",
        description=EXPORT_DESCRIPTION, epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=ARCHS + YOLOX_ARCHS,
                        help="architecture (yolox_* exports the person detector, official YOLOX ONNX layout + "
                             "detector card); optional for HRNet when the checkpoint carries its config")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, metavar="PATH",
                         help="official / mmpose checkpoint (.pth), or a checkpoint.pt of `train` (its arch "
                              "and what it was trained on are read from it), loaded with weights_only=True")
    weights.add_argument("--random-init", action="store_true",
                         help="no checkpoint: official random init, an UNTRAINED model (meaningless keypoints)")
    parser.add_argument("--seed", type=int, default=None, help="seed of --random-init (default 0)")
    parser.add_argument("--output", type=Path, default=None, metavar="PATH",
                        help="NAME.onnx to write; the card goes to NAME.json (default models/hrnet_ARCH.onnx)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET,
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {MIN_OPSET})")
    parser.add_argument("--fp16", action="store_true",
                        help="FP16 weights and arithmetic with float32 input/output, for GPUs; kept only if within "
                             "1e-2 x max |output| of the verified FP32 export on the check batches")
    parser.set_defaults(run=run_export_command, parser=parser)


def run_export_command(args: Any) -> int:
    """Run `export` from parsed arguments; returns the process exit code."""
    if args.seed is not None and not args.random_init:
        args.parser.error("--seed only applies to --random-init")
    if args.arch is None and args.random_init:
        args.parser.error("--random-init needs --arch")
    if is_yolox_arch(args.arch):
        return run_detector_export(args)
    output = args.output
    try:
        if output is None:  # models/hrnet_ARCH.onnx, ARCH from the checkpoint when it carries its config
            carried = read_checkpoint_config(args.checkpoint) if args.arch is None else None
            output = Path("models") / f"hrnet_{args.arch or (carried.name if carried else 'model')}.onnx"
        card = export_onnx(args.arch, output, checkpoint=args.checkpoint,
                           seed=0 if args.seed is None else args.seed, opset=args.opset, fp16=args.fp16)
    except (CheckpointError, ExportCheckFailed, ValueError, KeyError, OSError) as error:
        untrained = "UNTRAINED model: " if args.random_init else ""
        print(f"{untrained}export failed: {error}", file=sys.stderr)
        return 1
    check = card.export_check
    label = "UNTRAINED model (random init, meaningless keypoints)" if not card.trained else "trained model"
    print(f"{'UNTRAINED: ' if not card.trained else ''}exported {label} {card.arch} to {output} "
          f"(card {card_path_for(output)}); ORT vs torch max abs diff {check['max_abs_diff']:.3g}, "
          f"relative {check['relative_diff']:.3g}")
    if card.trained and card.warning:
        print(f"warning: {card.warning}")
    return 0
