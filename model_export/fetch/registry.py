"""The registry of published weights, read from registry.json (data, shipped as package data).

Every entry must be verifiable: its expected sha256 prefix is the one its publisher wrote into the file name
(OpenMMLab's `publish_model` names files `NAME-<first 8 hex of sha256>[_DATE].pth`), and loading the registry
checks that the two agree, so a typo in the data cannot silently disable verification.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from model_export.configs import ARCHS
from model_export.yolox.configs import YOLOX_ARCHS

REGISTRY_FORMAT = "hrnet-pose-weights-registry/1"
KINDS = ("pose", "detector")
MIN_HASH_DIGITS = 8
HEX = re.compile(r"[0-9a-f]+")
# `-<hex>` right before an optional `_YYYYMMDD` date and the extension: the publisher's hash prefix.
NAME_HASH = re.compile(r"-([0-9a-f]{8,64})(?:_\d{8})?\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class RegistryEntry:
    """One published checkpoint: where it is, what it must hash to, and what it is."""

    name: str
    kind: str  # "pose" (an HRNet checkpoint, exported to ONNX) or "detector" (YOLOX, exported with its card)
    arch: str  # a model_export.configs arch (pose) or a model_export.yolox.configs arch (detector)
    url: str
    sha256_prefix: str  # lower-case hex, at least 8 digits; the full sha256 when known
    ap: float | None  # the publisher's AP: pose, COCO val2017 keypoint AP; detector, box AP (see publisher)
    publisher: str

    @property
    def file_name(self) -> str:
        return url_file_name(self.url)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "file_name": self.file_name}


def url_file_name(url: str) -> str:
    """The last path segment of a URL (no query), the name the file gets in the cache."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if not name or name in (".", ".."):
        raise ValueError(f"URL has no file name: {url}")
    return name


def hash_prefix_in_name(file_name: str) -> str | None:
    """The sha256 prefix a publisher put in a file name (`...-c78dce93_20200708.pth` -> 'c78dce93'), if any."""
    match = NAME_HASH.search(file_name)
    return match.group(1) if match else None


def normalise_sha256(text: str) -> str:
    """Lower-case hex of 8 to 64 digits, or ValueError: a shorter prefix verifies nothing."""
    digest = text.strip().lower()
    if not HEX.fullmatch(digest) or not MIN_HASH_DIGITS <= len(digest) <= 64:
        raise ValueError(f"a sha256 must be {MIN_HASH_DIGITS} to 64 hex digits, got {text!r}")
    return digest


def _entry_from_json(item: dict[str, Any]) -> RegistryEntry:
    entry = RegistryEntry(name=str(item["name"]), kind=str(item["kind"]), arch=str(item["arch"]),
                          url=str(item["url"]), sha256_prefix=normalise_sha256(str(item["sha256_prefix"])),
                          ap=None if item.get("ap") is None else float(item["ap"]),
                          publisher=str(item.get("publisher", "")))
    if entry.kind not in KINDS:
        raise ValueError(f"registry entry {entry.name}: kind {entry.kind!r} is not one of {KINDS}")
    if entry.kind == "pose" and entry.arch not in ARCHS:
        raise ValueError(f"registry entry {entry.name}: unknown arch {entry.arch!r}")
    if entry.kind == "detector" and entry.arch not in YOLOX_ARCHS:
        raise ValueError(f"registry entry {entry.name}: unknown detector arch {entry.arch!r}")
    published = hash_prefix_in_name(entry.file_name)
    if published is None or not (entry.sha256_prefix.startswith(published)
                                 or published.startswith(entry.sha256_prefix)):
        raise ValueError(f"registry entry {entry.name}: sha256_prefix {entry.sha256_prefix} does not match the "
                         f"hash in its file name {entry.file_name}")
    return entry


def parse_registry(data: dict[str, Any]) -> tuple[RegistryEntry, ...]:
    if data.get("format") != REGISTRY_FORMAT:
        raise ValueError(f"registry format {data.get('format')!r}, expected {REGISTRY_FORMAT!r}")
    entries = tuple(_entry_from_json(item) for item in data["entries"])
    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"registry names must be unique; repeated: {', '.join(duplicates)}")
    return entries


@lru_cache(maxsize=1)
def load_registry() -> tuple[RegistryEntry, ...]:
    """The shipped registry (validated)."""
    text = resources.files("model_export.fetch").joinpath("registry.json").read_text(encoding="utf-8")
    return parse_registry(json.loads(text))


def find_entry(name: str) -> RegistryEntry:
    """The entry called `name`; KeyError naming the known names otherwise."""
    for entry in load_registry():
        if entry.name == name:
            return entry
    known = ", ".join(entry.name for entry in load_registry())
    raise KeyError(f"unknown weights {name!r}; known: {known} (or give a URL with --sha256 and --arch)")
