"""`python -m pose_client video VIDEO --url URL [--out FILE]`: a video's frames with track IDs as NDJSON (one
line per frame as the service streams it, then the summary), to FILE or stdout. Exit status 1 on an error."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from pose_client.client import PoseClient
from pose_client.errors import PoseClientError
from pose_client.video import VideoSummary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pose_client video", description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, help="MP4, WebM, AVI, ... file")
    parser.add_argument("--url", default=os.environ.get("POSE_URL"), required="POSE_URL" not in os.environ,
                        help="the service, e.g. http://127.0.0.1:8000 (default: $POSE_URL)")
    parser.add_argument("--out", type=Path, help="NDJSON file to write (default: stdout)")
    parser.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None, help="One-Euro smoothing")
    parser.add_argument("--fps", type=float, help="sample down to at most this many frames per second")
    parser.add_argument("--detect-every", type=int, help="run the person detector on every k-th frame")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="flip test")
    parser.add_argument("--api-key", default=os.environ.get("POSE_API_KEY"), help="default: $POSE_API_KEY")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per read (default 600)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.video.is_file():
        print(f"error: not a file: {args.video}", file=sys.stderr)
        return 2
    out = args.out.open("w") if args.out else sys.stdout
    try:
        with PoseClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            for item in client.pose_video(args.video, smooth=args.smooth, fps=args.fps,
                                          detect_every=args.detect_every, flip=args.flip):
                line = {"summary": item.raw} if isinstance(item, VideoSummary) else asdict(item)
                out.write(json.dumps(line) + "\n")
                out.flush()
    except PoseClientError as error:
        print(f"{args.video}: {error}", file=sys.stderr)
        return 1
    finally:
        if args.out:
            out.close()
    return 0
