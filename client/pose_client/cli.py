"""`python -m pose_client IMAGE... --url URL [--boxes FILE] --out results.json`: keypoints of many images into a
COCO keypoint results file, with a progress bar. Exit status 1 when an image failed (the others are written).
`python -m pose_client video VIDEO --url URL` writes a video's frames as NDJSON (pose_client/video_cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pose_client.client import PoseClient
from pose_client.coco import keypoint_results, read_boxes_file
from pose_client.errors import PoseClientError
from pose_client.models import PoseResult
from pose_client.options import BOX_FORMATS, PoseOptions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pose_client", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="JPEG, PNG, WebP or BMP files")
    parser.add_argument("--url", default=os.environ.get("POSE_URL"), required="POSE_URL" not in os.environ,
                        help="the service, e.g. http://127.0.0.1:8000 (default: $POSE_URL)")
    parser.add_argument("--out", type=Path, required=True, help="COCO keypoint results JSON to write")
    parser.add_argument("--boxes", type=Path, help="COCO detection results JSON, or {file name: [[x, y, w, h(, "
                        "score)], ...]}; without it each whole image is one person")
    parser.add_argument("--box-format", choices=BOX_FORMATS, default="xywh")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test (default: the service's setting)")
    parser.add_argument("--detect", action=argparse.BooleanOptionalAction, default=None,
                        help="without boxes: the service's person detector (default: on when it has one)")
    parser.add_argument("--api-key", default=os.environ.get("POSE_API_KEY"), help="default: $POSE_API_KEY")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds per image, from its request to its answer's last byte, retries included "
                             "(default 60)")
    parser.add_argument("--max-retries", type=int, default=8, help="per image, on 429/503/connection errors")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["video"]:  # python -m pose_client video FILE: NDJSON per frame
        from pose_client.video_cli import main as video_main

        return video_main(argv[1:])
    args = parse_args(argv)
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        print(f"error: not a file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        boxes = read_boxes_file(args.boxes, args.images) if args.boxes else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: --boxes: {exc}", file=sys.stderr)
        return 2
    with PoseClient(args.url, api_key=args.api_key, timeout=args.timeout, max_concurrency=args.concurrency,
                    max_retries=args.max_retries) as client:
        options = PoseOptions(box_format=args.box_format, flip=args.flip, detect=args.detect)
        outcomes = client.pose_many(args.images, boxes, options, progress=not args.no_progress, return_exceptions=True)
    done = [(image, r) for image, r in zip(args.images, outcomes, strict=True) if isinstance(r, PoseResult)]
    failed = [(image, r) for image, r in zip(args.images, outcomes, strict=True) if isinstance(r, PoseClientError)]
    for image, error in failed:
        print(f"{image}: {error}", file=sys.stderr)
    results = keypoint_results([image for image, _ in done], [r for _, r in done])
    args.out.write_text(json.dumps(results))
    if done and not done[0][1].model.trained:
        print(f"warning: the service's model {done[0][1].model.name!r} is untrained: its keypoints are meaningless",
              file=sys.stderr)
    print(f"{len(results)} persons from {len(done)} images -> {args.out}"
          + (f"; {len(failed)} images failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
