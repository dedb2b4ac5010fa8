"""`--detector NAME_OR_PATH` (evaluate): a detector ONNX file, or a registry name fetched and exported once.

A name is looked up in the registry (kind detector); its export goes to models/NAME.onnx and is reused while the
card beside it says it came from that entry. Every failure is a FetchError or ValueError of one line.
"""

from __future__ import annotations

from pathlib import Path

from model_export.fetch.cache import default_cache_dir
from model_export.fetch.detector import export_fetched_detector
from model_export.fetch.fetcher import FetchError, fetch_checkpoint, resolve_request
from model_export.fetch.registry import find_entry
from posecore.detection.card import DetectorLoadError, read_detector_card

MODELS_DIR = Path("models")


def _already_exported(output: Path, name: str) -> bool:
    try:
        card = read_detector_card(output)
    except DetectorLoadError:
        return False
    return output.is_file() and card is not None and card.source is not None and card.source.registry_name == name


def resolve_detector(name_or_path: str, *, models_dir: Path = MODELS_DIR, cache_dir: Path | None = None) -> Path:
    """The detector ONNX to open: `name_or_path` itself when it is a file or ends in .onnx, else the registry's."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix == ".onnx":
        return path
    try:
        entry = find_entry(name_or_path)
    except KeyError as error:
        raise ValueError(f"--detector {name_or_path}: no such file, and {error.args[0]}") from None
    if entry.kind != "detector":
        raise ValueError(f"--detector {name_or_path}: registry entry of kind {entry.kind}, not a detector")
    output = models_dir / f"{entry.name}.onnx"
    if _already_exported(output, entry.name):
        return output
    request = resolve_request(entry.name)
    fetched = fetch_checkpoint(request, cache_dir=cache_dir or default_cache_dir())
    if export_fetched_detector(request, fetched, output) != 0:
        raise FetchError(f"--detector {name_or_path}: the export failed (above)")
    return output
