"""Get a verified checkpoint into the cache: from the cache itself, a file given by hand, or a download.

A file enters the cache only under its publisher's name and only after its sha256 matched, so whatever sits
in the cache is verified; it is verified again when used, since a disk can rot and a hand can edit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from model_export.configs import ARCHS
from model_export.fetch.cache import cached_checkpoint
from model_export.fetch.download import DownloadError, HashMismatch, Timeouts, download, verify_file
from model_export.fetch.limits import DEFAULT_LIMITS, FetchLimits
from model_export.fetch.redact import Redactor, redact_url
from model_export.fetch.registry import RegistryEntry, find_entry, normalise_sha256, url_file_name
from model_export.yolox.configs import YOLOX_ARCHS

log = logging.getLogger(__name__)

MIRROR_ENV = "POSE_WEIGHTS_MIRROR"
DEFAULT_TIMEOUTS = Timeouts()


class FetchError(RuntimeError):
    """A checkpoint that could not be obtained and verified; the message is meant for the user as it is."""


@dataclass(frozen=True)
class WeightsRequest:
    """What to fetch: from the registry, or a URL with the hash and arch the user vouches for."""

    name: str
    url: str
    sha256: str  # expected: lower-case hex, a prefix of 8+ digits or the full 64
    arch: str
    ap: float | None = None
    entry: RegistryEntry | None = None

    @property
    def file_name(self) -> str:
        return url_file_name(self.url)


@dataclass(frozen=True)
class FetchedCheckpoint:
    path: Path
    sha256: str  # full
    how: str  # "cache", "file" or "download"


def is_url(text: str) -> bool:
    return urlsplit(text).scheme in ("http", "https")


def resolve_request(name_or_url: str, *, sha256: str | None = None, arch: str | None = None) -> WeightsRequest:
    """The registry entry named so, or a URL (which needs --sha256 and --arch); ValueError/KeyError otherwise."""
    expected = normalise_sha256(sha256) if sha256 else None
    if is_url(name_or_url):
        if expected is None or arch is None:
            raise ValueError("fetching by URL needs --sha256 (at least 8 hex digits) and --arch "
                             f"({', '.join(ARCHS + YOLOX_ARCHS)})")
        file_name = url_file_name(name_or_url)
        return WeightsRequest(name=Path(file_name).stem, url=name_or_url, sha256=expected, arch=arch)
    entry = find_entry(name_or_url)
    if arch is not None and arch != entry.arch:
        raise ValueError(f"{entry.name} is arch {entry.arch}, not {arch}; leave out --arch")
    if expected is not None and not expected.startswith(entry.sha256_prefix):
        raise ValueError(f"--sha256 {expected} contradicts the registry: {entry.name} starts {entry.sha256_prefix}")
    return WeightsRequest(name=entry.name, url=entry.url, sha256=expected or entry.sha256_prefix, arch=entry.arch,
                          ap=entry.ap, entry=entry)


def fetch_command(request: WeightsRequest) -> str:
    """The command line that fetches `request` again (for messages)."""
    if request.entry is not None:
        return f"python -m model_export fetch {request.name}"
    url = redact_url(request.url)
    return f"python -m model_export fetch {url} --sha256 {request.sha256} --arch {request.arch}"


def mirrored(url: str, mirror: str | None) -> str:
    """The URL with its scheme and host replaced by the mirror's base: BASE + the original path."""
    if not mirror:
        return url
    if not is_url(mirror):
        # not echoed: a mistyped mirror may still hold a password (alice:pw@host without the scheme)
        raise ValueError("a mirror must be an http(s) base URL, such as https://mirror.example.com/openmmlab")
    return mirror.rstrip("/") + urlsplit(url).path


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One fetch of a file at a time (two processes appending to one partial file would corrupt it)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_copy(source: Path, destination: Path) -> None:
    """Copy under a temporary name, then rename: the cache never shows a half-copied file."""
    staging = destination.with_name(destination.name + ".copying")
    try:
        shutil.copyfile(source, staging)
        os.replace(staging, destination)
    finally:
        staging.unlink(missing_ok=True)


def _from_cache(request: WeightsRequest, destination: Path) -> FetchedCheckpoint | None:
    if not destination.is_file():
        return None
    try:
        digest = verify_file(destination, request.sha256, f"cached {destination}", delete_on_mismatch=True)
    except HashMismatch as error:
        log.warning("%s; fetching it again", error)
        return None
    log.info("using the cached %s (sha256 %s)", destination, digest)
    return FetchedCheckpoint(destination, digest, "cache")


def _from_file(request: WeightsRequest, source: Path, destination: Path) -> FetchedCheckpoint:
    if not source.is_file():
        raise FetchError(f"--from-file {source}: no such file")
    try:  # the user's own file is theirs: reported, never deleted
        digest = verify_file(source, request.sha256, str(source), delete_on_mismatch=False)
    except HashMismatch as error:
        raise FetchError(f"{error}. It is not {request.file_name} ({request.name}).") from None
    if source.resolve() != destination.resolve():
        _install_copy(source, destination)
    log.info("verified %s (sha256 %s) and stored it as %s", source, digest, destination)
    return FetchedCheckpoint(destination, digest, "file")


def _download(request: WeightsRequest, destination: Path, url: str, timeouts: Timeouts, limits: FetchLimits,
              progress: bool) -> FetchedCheckpoint:
    partial = destination.with_name(destination.name + ".partial")
    shown, redact = redact_url(url), Redactor([url, request.url])
    log.info("downloading %s to %s", shown, destination)
    try:
        download(url, partial, timeouts=timeouts, limits=limits, progress=progress)
        digest = verify_file(partial, request.sha256, shown, delete_on_mismatch=True)
    except HashMismatch as error:
        raise FetchError(redact(str(error))) from None
    except DownloadError as error:
        raise FetchError(redact(
            f"cannot download {shown}: {error}. To use a copy obtained another way: {fetch_command(request)} "
            f"--from-file PATH (verified, then stored as {destination}); or point --mirror / ${MIRROR_ENV} at a "
            "mirror")) from None
    os.replace(partial, destination)
    log.info("verified %s (sha256 %s)", destination, digest)
    return FetchedCheckpoint(destination, digest, "download")


def fetch_checkpoint(request: WeightsRequest, *, cache_dir: Path, mirror: str | None = None,
                     from_file: Path | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                     limits: FetchLimits = DEFAULT_LIMITS, progress: bool = False) -> FetchedCheckpoint:
    """A verified local copy of the requested checkpoint in `cache_dir`; FetchError with the reason otherwise."""
    destination = cached_checkpoint(cache_dir, request.file_name)
    url = mirrored(request.url, mirror)
    with _exclusive(destination.with_name(destination.name + ".lock")):
        if from_file is not None:
            return _from_file(request, from_file, destination)
        cached = _from_cache(request, destination)
        return cached or _download(request, destination, url, timeouts, limits, progress)
