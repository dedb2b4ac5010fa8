"""`fetch` for a detector entry: the verified YOLOX checkpoint exported to ONNX + detector card (its provenance)."""

from __future__ import annotations

import sys
from pathlib import Path

from model_export.checkpoint import CheckpointError
from model_export.checks import ExportCheckFailed
from model_export.fetch.fetcher import FetchedCheckpoint, WeightsRequest
from model_export.yolox.export import export_detector


def export_fetched_detector(request: WeightsRequest, fetched: FetchedCheckpoint, output: Path) -> int:
    """Export; the card records url, full sha256, registry name, publisher and box AP. One line either way."""
    entry = request.entry
    provenance = {"url": request.url, "sha256": fetched.sha256, "registry_name": entry.name if entry else None,
                  "publisher": entry.publisher if entry else None, "box_ap": request.ap}
    try:
        card, check = export_detector(request.arch, output, fetched.path, provenance=provenance)
    except (CheckpointError, ExportCheckFailed, ValueError, OSError) as error:
        print(f"export of {fetched.path} failed: {error}", file=sys.stderr)
        return 1
    ap = f", publisher's box AP {request.ap:.3f}" if request.ap is not None else ""
    print(f"exported detector {request.name} ({request.arch}{ap}; checkpoint from {fetched.how}: {fetched.path}, "
          f"sha256 {fetched.sha256}) to {output} (card {output.with_suffix('.json')}, {card.preprocessing} "
          f"letterbox); ORT vs torch max abs diff {check['max_abs_diff']:.3g}")
    return 0
