"""`python -m model_export eager-bench`: the command line over model_export.eager_bench (a job on stdin, one JSON
line out; exit status 3 where torch or the architecture is missing)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from model_export import eager_bench
from model_export.eager_bench import run_job

UNAVAILABLE = 3  # service/bench/baselines.py EAGER_UNAVAILABLE: the bench skips the phase


def add_eager_bench_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eager-bench", help="the bench's PyTorch eager baseline (a job on stdin)", description=eager_bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run_eager_bench_command)


def run_eager_bench_command(args: argparse.Namespace) -> int:
    runs = run_job(json.loads(sys.stdin.read()))
    if runs is None:
        print("eager-bench: torch (or this architecture) is not available here", file=sys.stderr)
        return UNAVAILABLE
    print(json.dumps(runs))
    return 0
