"""`python -m model_export quantize`: the command line over model_export.quantize.quantizer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from model_export.quantize.calibration import CalibrationDataError
from model_export.quantize.graph import ModelNotQuantizable
from model_export.quantize.quantizer import (
    METHODS,
    REPORT_SUFFIX,
    AgreementTooLow,
    NotFaster,
    QuantizeSettings,
    quantize_model,
)
from model_export.quantize.search import Target
from model_export.quantize.speed import NO_GAIN
from posecore.errors import ModelLoadError

DESCRIPTION = f"""\
Static INT8 quantization (ONNX QDQ) of a float32 top-down pose model for CPUs, calibrated on real person crops,
to an agreement target, and only where it runs faster.

The crops are cut from the annotated person boxes exactly as the service cuts them. Whole photos are split into a
calibration set and a held-out set; the INT8 model is compared with its parent on the held-out crops only.
Before calibration the graph is made canonical (BatchNormalization folded into Conv and ConvTranspose, ReLU/ReLU6
activations fused, Identity nodes removed) and checked to compute what the parent computes. Weights are int8 per
output channel, activations uint8 with ranges from the chosen method, but the head's (the single path from the
backbone's last merge to the heatmaps: sparse, peaky) from their plain min/max. The first convolution and the
final heatmap convolution stay in float. When the held-out agreement misses the target, a cumulative greedy search
keeps more layers in float, one per step, the one that helps most, until the target is met or the float budget is
spent. Then both models' crops/s are measured on this machine (same threads, batch 4 or the fixed batch).

Writes OUT.onnx, its card OUT.json (quantization: method, canonical rewrites, float layers and what each bought,
target, agreement, speed, calibration set, parent sha256) and OUT{REPORT_SUFFIX} (each layer's SQNR against
float32 on the held-out crops, and the head's noise with and without its own ranges). Exit codes: 0 written;
1 target not reached within the float budget (nothing written; it says how close it got); 2 unusable model or
data; 3 INT8 not faster than float32 here (nothing written; --allow-slower writes it).
"""

EPILOG = """\
Examples:
  python -m model_export quantize --model models/hrnet_w32_256x192.onnx --output models/hrnet_w32_256x192.int8.onnx \\
      --calibration-annotations coco/annotations/person_keypoints_train2017.json --calibration-images coco/train2017
  # the shared photos (a boxes.json index works as well as COCO annotations)
  python -m model_export quantize --model models/m.onnx --output models/m.int8.onnx \\
      --calibration-annotations ../shared/data/people/boxes.json --calibration-images ../shared/data/people
"""


def add_quantize_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("quantize", help="static INT8 (QDQ) model for CPUs, calibrated on real crops",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, metavar="IN.onnx", help="float32 ONNX model")
    parser.add_argument("--output", type=Path, required=True, metavar="OUT.onnx", help="INT8 model to write")
    data = parser.add_argument_group("calibration data")
    data.add_argument("--calibration-annotations", type=Path, required=True, metavar="FILE",
                      help="COCO annotations (images[].file_name, annotations[].bbox) or a boxes.json index")
    data.add_argument("--calibration-images", type=Path, required=True, metavar="DIR",
                      help="folder the file names are relative to")
    data.add_argument("--max-crops", type=int, default=256, metavar="N", help="calibration crops (default 256)")
    data.add_argument("--held-out-fraction", type=float, default=0.25, metavar="F",
                      help="share of the photos held out for the agreement check (default 0.25)")
    data.add_argument("--max-held-out-crops", type=int, default=128, metavar="N", help="default 128")
    data.add_argument("--seed", type=int, default=0, help="seed of the photo split and crop sample")
    quant = parser.add_argument_group("quantization")
    quant.add_argument("--method", choices=sorted(METHODS), default="percentile",
                       help="activation range calibration (default percentile; minmax lets outliers waste the range)")
    quant.add_argument("--percentile", type=float, default=99.999, help="for --method percentile (default 99.999)")
    quant.add_argument("--exclude", action="append", default=[], metavar="NODE",
                       help="keep this node in float as well (repeatable; node names are in the layer report)")
    quant.add_argument("--float-ends", action=argparse.BooleanOptionalAction, default=True,
                       help="keep the first and the heatmap convolutions in float (default on; --no-float-ends "
                            "quantizes them too, to measure what they buy)")
    quant.add_argument("--head-method", choices=["minmax", "same"], default="minmax",
                       help="activation ranges of the head's tensors: their plain min/max (default), or the same "
                            "method as everywhere else")
    quant.add_argument("--reduce-range", action="store_true",
                       help="7-bit weights, for x86 CPUs without VNNI (avoids int16 saturation; costs accuracy)")
    quant.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                       help="per-output-channel weight scales (default on)")
    quant.add_argument("--batch-size", type=int, default=4, help="calibration batch (a fixed-batch model uses its own)")
    check = parser.add_argument_group("target and mixed-precision search (on the held-out crops)")
    check.add_argument("--target-median-px", type=float, default=Target.max_median_px, metavar="PX",
                       help="median keypoint distance to float32, image pixels (default 0.5)")
    check.add_argument("--target-within-one", type=float, default=Target.min_within_one, metavar="SHARE",
                       help="share of joints within one heatmap pixel of float32's (default 0.85)")
    check.add_argument("--min-heatmap-sqnr", type=float, default=Target.min_sqnr_db, metavar="DB",
                       help="heatmap SQNR against float32 (default 15 dB)")
    check.add_argument("--search", action=argparse.BooleanOptionalAction, default=True,
                       help="keep more layers in float until the target is met (default on)")
    check.add_argument("--float-budget", type=int, default=8, metavar="N",
                       help="at most N layers added to float by the search (default 8)")
    check.add_argument("--search-top-k", type=int, default=3, metavar="K",
                       help="layers tried per search step, the noisiest of the layer report first (default 3)")
    check.add_argument("--accept-low-agreement", action="store_true", help="write it even if the target is missed")
    check.add_argument("--allow-slower", action="store_true",
                       help="write it even if it is not faster than float32 on this machine")
    parser.set_defaults(run=run_quantize_command)


def run_quantize_command(args: argparse.Namespace) -> int:
    for path in (args.model, args.calibration_annotations, args.calibration_images):
        if not path.exists():
            print(f"quantize: not found: {path}", file=sys.stderr)
            return 2
    settings = QuantizeSettings(
        model=args.model, output=args.output, annotations=args.calibration_annotations,
        images=args.calibration_images, max_crops=args.max_crops, held_out_fraction=args.held_out_fraction,
        max_held_out_crops=args.max_held_out_crops, method=args.method, percentile=args.percentile,
        head_method=None if args.head_method == "same" else args.head_method, exclude=tuple(args.exclude),
        float_ends=args.float_ends, search=args.search, float_budget=args.float_budget,
        search_top_k=args.search_top_k,
        target=Target(args.target_median_px, args.target_within_one, args.min_heatmap_sqnr),
        per_channel=args.per_channel, reduce_range=args.reduce_range, accept_low_agreement=args.accept_low_agreement,
        allow_slower=args.allow_slower, batch_size=args.batch_size, seed=args.seed)
    try:
        result = quantize_model(settings)
    except AgreementTooLow as exc:
        print(f"quantize: {exc}", file=sys.stderr)
        return 1
    except NotFaster as exc:
        print(str(exc), file=sys.stderr)
        return 3
    except (ModelNotQuantizable, CalibrationDataError, ModelLoadError, ValueError) as exc:
        print(f"quantize: {exc}", file=sys.stderr)
        return 2
    worst = sorted((e for e in result.layers if e.int8), key=lambda e: e.added_db)[:5]
    print(f"wrote {result.output} (+ {result.output.with_suffix('.json').name}, {result.report.name})")
    if result.canonical:
        print("canonical graph: " + ", ".join(f"{kind} x{count}" for kind, count in result.canonical.items()))
    if result.ranges.head_tensors:
        print(f"head ranges: {settings.head_method} for {len(result.ranges.head_tensors)} head tensors")
    print(f"kept in float: {', '.join(result.float_layers)}")
    for number, step in enumerate(result.steps, 1):
        print(f"  search step {number}: {step.layer} ({step.op_type}) bought {step.bought()}")
    print(f"agreement with float32 on held-out crops: {result.agreement.summary()}")
    print(result.speed.summary())
    if not result.speed.faster:
        print(NO_GAIN)
    print("noisiest int8 layers: " + "; ".join(f"{e.name} adds {e.added_db:.1f} dB (at {e.sqnr_db:.1f})"
                                               for e in worst))
    return 0
