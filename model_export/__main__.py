"""`python -m model_export <command>` (console script `pose-export`): a small dispatcher.

One layout for every command: its work in a module (or package) of its own, its command line beside it in
`<command>_cli.py` (or `<command>/cli.py` for a package), which contributes `add_<command>_parser(subparsers)`
and sets `run` (parsed args -> exit code).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from model_export.eager_bench_cli import add_eager_bench_parser
from model_export.evaluate_cli import add_evaluate_parser
from model_export.export_cli import add_export_parser
from model_export.fetch.cli import add_fetch_parser
from model_export.quantize.cli import add_quantize_parser
from model_export.train_cli import add_train_parser

COMMANDS = (add_export_parser, add_fetch_parser, add_train_parser, add_evaluate_parser, add_quantize_parser,
            add_eager_bench_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_export",
        description="HRNet pose model tools. Run '%(prog)s COMMAND --help' for the details of a command.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
