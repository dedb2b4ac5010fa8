"""`python -m model_export evaluate`: the command line over model_export.evaluate."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from model_export.data.validation import InputDataError, check_evaluation_files
from model_export.evaluate import (
    DETECTION_SCORE_THRESHOLD,
    OKS_NMS_THRESHOLD,
    LocalRunner,
    ServiceRunner,
    evaluate,
    format_stats,
)
from model_export.fetch.detector_source import resolve_detector
from posecore.backend import ModelLoadError
from posecore.contract import DEFAULT_MAX_BOXES
from posecore.detection import PersonDetector

EVALUATE_DESCRIPTION = """\
COCO keypoint AP (pycocotools COCOeval, iouType 'keypoints') of an exported HRNet ONNX model, computed with
the service's own code: the service's image decoding, box -> center/scale, affine crop and normalisation,
flip test, argmax + quarter-pixel decode and inverse affine (posecore.codec.PoseCodec), its ONNX Runtime
backend, then the official rescoring (box score x mean of the keypoint scores above 0.2) and OKS-NMS at 0.9
per image.

Person boxes: by default the ground-truth boxes of the annotated persons (cleaned as in training, score 1),
as the official USE_GT_BBOX test; with --detections, a COCO detection-results JSON (person category, every
score >= --det-threshold, official IMAGE_THRE 0.0), as the official val2017 numbers (detector AP 56.4); with
--detector, a person detector ONNX (YOLOX layout, see README "Person detector") run on every image exactly as
the service runs it on a bare photo, its boxes and scores used as the person boxes.

With --url the model file is not opened: every image and its boxes are POSTed to a running service
(/v1/pose, flip passed through) and its keypoints are scored by the same NMS and COCOeval, so what is
measured is what is deployed. The two ways give the same stats for the same model.

Prints the ten COCO stats (AP, AP .5, AP .75, AP (M), AP (L), AR, AR .5, AR .75, AR (M), AR (L)); --json-out
writes them as JSON, --results-out the COCO keypoint results.
"""

EVALUATE_EPILOG = """\
Examples:
  python -m model_export evaluate --model models/hrnet_w32_256x192.onnx \\
      --annotations coco/annotations/person_keypoints_val2017.json --images coco/val2017 \\
      --detections COCO_val2017_detections_AP_H_56_person.json --json-out ap.json
  python -m model_export evaluate --url http://127.0.0.1:8000 \\
      --annotations ../shared/data/coco-mini/test_coco.json --images ../shared/data/coco-mini
  python -m model_export evaluate --model models/hrnet_w32_256x192.onnx --detector models/yolox_s.onnx \\
      --detector-threshold 0.01 --annotations ../shared/data/coco-mini/test_coco.json --images ../shared/data/coco-mini
Official val2017 AP with detector boxes and flip test: W32 256x192 0.744, W48 384x288 0.763.
"""


def add_evaluate_parser(subparsers: Any) -> None:
    """Register the `evaluate` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "evaluate", help="COCO keypoint AP of an ONNX model (or a running service) with the service's pipeline",
        description=EVALUATE_DESCRIPTION, epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", type=Path, metavar="PATH.onnx",
                        help="exported ONNX model (its card NAME.json beside it is read as the service reads it)")
    target.add_argument("--url", metavar="URL",
                        help="evaluate a running service instead, e.g. http://127.0.0.1:8000")
    parser.add_argument("--annotations", type=Path, required=True, metavar="FILE",
                        help="COCO person-keypoints annotation JSON (e.g. person_keypoints_val2017.json)")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="folder that the annotations' file_name entries are relative to")
    boxes_from = parser.add_mutually_exclusive_group()
    boxes_from.add_argument("--detections", type=Path, default=None, metavar="FILE",
                            help="COCO detection results for the person boxes (default: ground-truth boxes)")
    boxes_from.add_argument("--detector", default=None, metavar="NAME_OR_PATH",
                            help="find the person boxes with this detector: an ONNX file (its card NAME.json "
                                 "beside it) or a registry name (kind detector), fetched and exported to models/")
    parser.add_argument("--detector-threshold", type=float, default=None, metavar="S",
                        help="--detector's score threshold (default: its card's, 0.3 without one; AP as the "
                             "official protocol counts low-scored boxes too, e.g. 0.01)")
    parser.add_argument("--det-threshold", type=float, default=DETECTION_SCORE_THRESHOLD, metavar="S",
                        help=f"drop detections scored below S (default {DETECTION_SCORE_THRESHOLD}, official)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="flip test: average with the mirrored crop's heatmaps (default on, as official)")
    parser.add_argument("--oks-threshold", type=float, default=OKS_NMS_THRESHOLD, metavar="T",
                        help=f"OKS-NMS threshold per image (default {OKS_NMS_THRESHOLD}, official)")
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda", "tensorrt"], default="cpu",
                        help="ONNX Runtime execution provider for --model (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="most crops per ONNX Runtime call for --model (default 8)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="ONNX Runtime intra-op threads for --model (default 0: all cores)")
    parser.add_argument("--api-key", default=os.environ.get("POSE_API_KEY"), metavar="KEY",
                        help="API key for --url (header X-API-Key; default env POSE_API_KEY)")
    parser.add_argument("--max-boxes", type=int, default=DEFAULT_MAX_BOXES, metavar="N",
                        help=f"boxes per request with --url (the service's POSE_MAX_BOXES, default "
                             f"{DEFAULT_MAX_BOXES})")
    parser.add_argument("--json-out", type=Path, default=None, metavar="FILE", help="write the stats as JSON")
    parser.add_argument("--results-out", type=Path, default=None, metavar="FILE",
                        help="write the COCO keypoint results (after NMS) as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_evaluate_command, parser=parser)


def run_evaluate_command(args: Any) -> int:
    """Run `evaluate` from parsed arguments; returns the process exit code."""
    for path, what in ((args.annotations, "annotation file"), (args.images, "image folder"),
                       (args.detections, "detections file")):
        if path is not None and not path.exists():
            print(f"evaluate: {what} not found: {path}", file=sys.stderr)
            return 2
    try:
        check_evaluation_files(args.annotations, args.images, args.detections)
    except InputDataError as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 2
    runner: ServiceRunner | LocalRunner | None = None
    try:
        detector = None if args.detector is None else PersonDetector(
            resolve_detector(args.detector), score_threshold=args.detector_threshold, provider=args.provider,
            intra_op_threads=args.threads)
        if args.url:
            runner = ServiceRunner(args.url, api_key=args.api_key, max_boxes=args.max_boxes)
        else:
            runner = LocalRunner.from_onnx(args.model, args.provider, args.batch_size, args.threads)
        result = evaluate(args.annotations, args.images, runner, runner.card, args.detections, args.flip,
                          args.det_threshold, args.oks_threshold, progress=not args.no_progress, detector=detector)
    except InputDataError as error:  # an image that does not decode
        print(f"evaluate: {error}", file=sys.stderr)
        return 2
    except (ModelLoadError, OSError, ValueError, RuntimeError) as error:
        print(f"evaluate failed: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # pose_client's errors: the service is not there, or refused
        if type(error).__module__.startswith("pose_client"):
            print(f"evaluate failed: the service at {args.url}: {error}", file=sys.stderr)
            return 1
        raise
    finally:
        if isinstance(runner, ServiceRunner):
            runner.close()
    assert runner is not None  # every path that leaves it None has returned
    card = runner.card
    what = args.url or str(args.model)
    boxes = f"detections {args.detections}" if args.detections else "ground-truth boxes"
    if detector is not None:
        boxes = f"detector {args.detector}, score > {detector.score_threshold}"
    trained = "" if card.trained else "  (UNTRAINED model: these numbers are meaningless)"
    print(f"COCO keypoint evaluation of {what} [{card.arch}]{trained}\n"
          f"  {args.annotations}: {result.num_images} images, {result.num_boxes} person boxes ({boxes}), "
          f"flip test {'on' if args.flip else 'off'}, {len(result.results)} persons after OKS-NMS")
    if card.warning:
        print(f"  model warning: {card.warning}")
    print(format_stats(result.stats))
    if args.json_out:
        body = {**result.to_json(), "model": None if args.url else str(args.model), "url": args.url,
                "annotations": str(args.annotations), "images": str(args.images),
                "detections": None if args.detections is None else str(args.detections), "flip": args.flip,
                "detector": None if detector is None else {"path": str(args.detector), "card": detector.card.model_dump(
                    mode="json"), "score_threshold": detector.score_threshold, "nms_iou": detector.nms_iou},
                "card": {"name": card.name, "arch": card.arch, "trained": card.trained, "warning": card.warning,
                         "weights": card.weights.model_dump()}}
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(body, indent=2) + "\n")
    if args.results_out:
        args.results_out.parent.mkdir(parents=True, exist_ok=True)
        args.results_out.write_text(json.dumps(result.results) + "\n")
    return 0
