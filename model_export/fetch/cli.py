"""`python -m model_export fetch`: official weights by name (or URL), verified, cached, exported to ONNX + card."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from model_export.checkpoint import CheckpointError
from model_export.configs import ARCHS
from model_export.export import ExportCheckFailed, export_onnx
from model_export.fetch.cache import CACHE_ENV, default_cache_dir
from model_export.fetch.download import Timeouts
from model_export.fetch.fetcher import (
    MIRROR_ENV,
    FetchedCheckpoint,
    FetchError,
    WeightsRequest,
    fetch_checkpoint,
    resolve_request,
)
from model_export.fetch.limits import (
    DEADLINE_ENV,
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_BYTES,
    MAX_BYTES_ENV,
    FetchLimits,
    parse_size,
)
from model_export.fetch.redact import Redactor, redact_url
from model_export.fetch.registry import RegistryEntry, load_registry
from model_export.yolox.configs import YOLOX_ARCHS, is_yolox_arch

DEFAULT_READ_TIMEOUT_S = 30.0
MAX_CONNECT_TIMEOUT_S = 10.0

FETCH_DESCRIPTION = f"""\
Get official HRNet weights and export them for the service, in one go: the checkpoint is taken from the
cache or downloaded (streamed, resumable), its sha256 verified, then exported to ONNX and checked against
torch; the model card beside the ONNX file records "trained": true, the source URL, the checkpoint's full
sha256 and the AP its publisher reports.

  python -m model_export fetch --list                  the registry (mmpose COCO top-down HRNet)
  python -m model_export fetch hrnet_w32_coco_256x192  -> models/hrnet_w32_coco_256x192.onnx + .json
  python -m model_export fetch yolox_s_8x8_300e_coco   a person detector (kind detector): YOLOX ONNX + detector card
  make serve WEIGHTS=hrnet_w32_coco_256x192            the same, then serve it

Cache: --cache-dir, else ${CACHE_ENV}, else $XDG_CACHE_HOME/hrnet-pose (~/.cache/hrnet-pose). A file
enters the cache only once verified; a cut transfer is resumed (HTTP Range) within the call and by the next.
Offline or behind a firewall: fetch the file by other means and pass --from-file; or --mirror BASE_URL
(or ${MIRROR_ENV}) downloads from BASE_URL + the file's path on the original host; credentials in it
(https://user:password@host/..., token=... in the query) are used and never printed.

Limits: a file over --max-size (default 1 GiB, ${MAX_BYTES_ENV}) is refused from its announced size
before a byte is written, and cut off (its partial file deleted) if it grows past it; a body the server
compresses although identity was asked for is refused; the whole fetch ends after --deadline seconds (default
{DEFAULT_DEADLINE_S:g}, ${DEADLINE_ENV}), however slowly the server drips.
"""


def add_fetch_parser(subparsers: Any) -> None:
    """Register the `fetch` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "fetch", help="official HRNet weights by name: download or cache, verify, export to ONNX + model card",
        description=FETCH_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="?", metavar="NAME_OR_URL",
                        help="a registry name (see --list), or an http(s) URL with --sha256 and --arch")
    parser.add_argument("--list", action="store_true", help="print the registry and exit")
    parser.add_argument("--json", action="store_true", help="with --list: a JSON list of entries")
    parser.add_argument("--sha256", metavar="HEX",
                        help="expected sha256 of the checkpoint, full or its first 8+ hex digits (needed for a URL)")
    parser.add_argument("--arch", choices=ARCHS + YOLOX_ARCHS, help="architecture of a checkpoint given by URL "
                        "(yolox_*: a person detector)")
    parser.add_argument("--output", type=Path, metavar="PATH.onnx",
                        help="ONNX file to write, the card beside it (default models/NAME.onnx)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help=f"cache directory (default ${CACHE_ENV}, else the XDG cache dir)")
    parser.add_argument("--mirror", metavar="BASE_URL", default=None,
                        help=f"download from BASE_URL + the original path (default ${MIRROR_ENV})")
    parser.add_argument("--from-file", type=Path, metavar="PATH",
                        help="use this local copy of the checkpoint: verified, then stored in the cache")
    parser.add_argument("--timeout", type=float, default=DEFAULT_READ_TIMEOUT_S, metavar="S",
                        help=f"seconds to wait for each read (default {DEFAULT_READ_TIMEOUT_S:g}); connecting "
                             f"waits at most min(S, {MAX_CONNECT_TIMEOUT_S:g})")
    parser.add_argument("--max-size", metavar="BYTES", default=None,
                        help=f"refuse a file larger than this (e.g. 300MB, 1GiB; default ${MAX_BYTES_ENV}, else "
                             f"{DEFAULT_MAX_BYTES} = 1 GiB)")
    parser.add_argument("--deadline", type=float, default=None, metavar="S",
                        help=f"seconds the whole download may take, all attempts together (default "
                             f"${DEADLINE_ENV}, else {DEFAULT_DEADLINE_S:g})")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")
    parser.set_defaults(run=run_fetch_command, parser=parser)


def print_registry(entries: tuple[RegistryEntry, ...], as_json: bool) -> None:
    if as_json:
        print(json.dumps([entry.to_json() for entry in entries], indent=2))
        return
    print(f"{'NAME':<42} {'KIND':<8} {'ARCH':<12} {'AP':>5}  PUBLISHER")
    for entry in entries:
        ap = f"{entry.ap:.3f}" if entry.ap is not None else "-"
        print(f"{entry.name:<42} {entry.kind:<8} {entry.arch:<12} {ap:>5}  {entry.publisher}")


def provenance(request: WeightsRequest, fetched: FetchedCheckpoint) -> dict[str, Any]:
    """The card's weights fields for a fetched checkpoint."""
    where = f"{request.entry.publisher}: {request.name}" if request.entry else "by URL"
    return {"source": f"{request.file_name} ({where})", "checkpoint_sha256": fetched.sha256,
            "registry_name": request.entry.name if request.entry else None, "url": redact_url(request.url),
            "ap": request.ap}


def fetch_limits(args: Any) -> FetchLimits:
    """The limits from the flags, else the environment, else the defaults; argparse error when unusable."""
    size = args.max_size if args.max_size is not None else os.environ.get(MAX_BYTES_ENV)
    deadline = args.deadline if args.deadline is not None else os.environ.get(DEADLINE_ENV)
    try:
        return FetchLimits(max_bytes=DEFAULT_MAX_BYTES if size is None else parse_size(str(size)),
                           deadline_s=DEFAULT_DEADLINE_S if deadline is None else float(deadline))
    except ValueError as error:
        args.parser.error(f"--max-size / ${MAX_BYTES_ENV} or --deadline / ${DEADLINE_ENV}: {error}")
        raise  # parser.error exits


def run_fetch_command(args: Any) -> int:
    """Run `fetch` from parsed arguments; returns the process exit code."""
    if args.list:
        print_registry(load_registry(), args.json)
        return 0
    if args.json:
        args.parser.error("--json goes with --list")
    if not args.weights:
        args.parser.error("give NAME_OR_URL (see --list)")
    if args.timeout <= 0:
        args.parser.error("--timeout must be positive")
    mirror = args.mirror or os.environ.get(MIRROR_ENV)
    redact = Redactor([args.weights, mirror])
    try:
        request = resolve_request(args.weights, sha256=args.sha256, arch=args.arch)
    except (KeyError, ValueError) as error:
        args.parser.error(redact(str(error).strip("'\"")))
    limits = fetch_limits(args)
    output = args.output or Path("models") / f"{request.name}.onnx"
    cache_dir = args.cache_dir or default_cache_dir()
    timeouts = Timeouts(connect=min(args.timeout, MAX_CONNECT_TIMEOUT_S), read=args.timeout)
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        fetched = fetch_checkpoint(request, cache_dir=cache_dir, mirror=mirror, from_file=args.from_file,
                                   timeouts=timeouts, limits=limits, progress=progress)
    except (FetchError, ValueError, OSError) as error:
        print(f"fetch failed: {redact(str(error))}", file=sys.stderr)
        return 1
    return export_fetched(request, fetched, output)


def export_fetched(request: WeightsRequest, fetched: FetchedCheckpoint, output: Path) -> int:
    """Export the verified checkpoint with its provenance in the card; print one summary line."""
    if is_yolox_arch(request.arch):
        from model_export.fetch.detector import export_fetched_detector

        return export_fetched_detector(request, fetched, output)
    try:
        card = export_onnx(request.arch, output, checkpoint=fetched.path,
                           provenance=provenance(request, fetched))
    except (CheckpointError, ExportCheckFailed, ValueError, OSError) as error:
        print(f"export of {fetched.path} failed: {error}", file=sys.stderr)
        return 1
    check = card.export_check
    ap = f", publisher's COCO AP {request.ap:.3f}" if request.ap is not None else ""
    print(f"exported {request.name} ({request.arch}{ap}; checkpoint from {fetched.how}: {fetched.path}, "
          f"sha256 {fetched.sha256}) to {output} (card {output.with_suffix('.json')}); ORT vs torch max abs diff "
          f"{check['max_abs_diff']:.3g}, relative {check['relative_diff']:.3g}")
    return 0
