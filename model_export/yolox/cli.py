"""`python -m model_export export --arch yolox_*`: the export command when the arch is a detector."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from model_export.checkpoint import CheckpointError
from model_export.checks import ExportCheckFailed
from model_export.yolox.export import export_detector


def run_detector_export(args: Any) -> int:
    """Export a YOLOX checkpoint (or --random-init) to ONNX + detector card; one line on failure, exit 1."""
    if args.fp16:
        args.parser.error("--fp16 is for the pose model; the detector is exported in FP32")
    if args.opset != 17:
        args.parser.error("a YOLOX export uses opset 17")
    output = args.output or Path("models") / f"{args.arch}.onnx"
    try:
        card, check = export_detector(args.arch, output, args.checkpoint,
                                      seed=0 if args.seed is None else args.seed)
    except (CheckpointError, ExportCheckFailed, ValueError, OSError) as error:
        print(f"{'UNTRAINED detector: ' if args.random_init else ''}export failed: {error}", file=sys.stderr)
        return 1
    what = "UNTRAINED detector (random init, its boxes are noise)" if not card.trained else "detector"
    print(f"{'UNTRAINED: ' if not card.trained else ''}exported {what} {card.arch} to {output} (card "
          f"{output.with_suffix('.json')}, {card.preprocessing} letterbox, input {list(card.input_size)}); ORT vs "
          f"torch max abs diff {check['max_abs_diff']:.3g} on batches {check['batches']}")
    return 0
