"""Streamed, resumable HTTP download of one file, and its sha256 verification.

The bytes go to `NAME.partial`; a transfer cut short is resumed with an HTTP Range request, by a bounded number
of further attempts in the same call (each must make progress) and by the next call, which finds the partial
file. Nothing here moves a file into place: the caller does, once `verify_file` has passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import requests
from tqdm import tqdm

log = logging.getLogger(__name__)

# urllib3 fills a whole chunk before yielding it and drops the unfilled chunk when the connection is cut, so a
# small chunk keeps what a cut transfer brought (all but < 64 KiB).
CHUNK_BYTES = 1 << 16
MAX_ATTEMPTS = 5  # per call; a new attempt follows only a transfer that made progress, or a transient status
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_S = 1.0  # before retrying a transient status, doubled each time
USER_AGENT = "hrnet-pose-fetch/1"
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
BROKEN_TEXT = re.compile(r"Connection broken: [^'\"]+")


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection, and for each read (the first answer, then every chunk)."""

    connect: float = 10.0
    read: float = 30.0


DEFAULT_TIMEOUTS = Timeouts()


class DownloadError(RuntimeError):
    """The download did not produce the whole file (what is there stays in the partial file)."""


class Unreachable(DownloadError):
    """No HTTP answer at all: the name does not resolve, the port is closed, or nothing answers in time."""


class TransientStatus(DownloadError):
    """A status that says 'try again soon' (429, 5xx)."""


class Interrupted(DownloadError):
    """The transfer stopped before the end (connection cut, read timeout, short body)."""

    def __init__(self, message: str, received: int):
        super().__init__(message)
        self.received = received  # bytes this attempt brought


class HashMismatch(DownloadError):
    """A file whose sha256 is not the expected one."""

    def __init__(self, source: str, expected: str, actual: str, deleted: bool):
        what = "it was deleted" if deleted else "it was left as it is"
        super().__init__(f"{source} failed verification: expected sha256 {expected}"
                         f"{'' if len(expected) == 64 else '...'}, got {actual}; {what}")
        self.expected, self.actual = expected, actual


class ProgressBar(Protocol):
    def update(self, n: int) -> object: ...


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, source: str, *, delete_on_mismatch: bool) -> str:
    """The file's full sha256 if it starts with `expected` (a prefix or the full hex); HashMismatch otherwise."""
    actual = sha256_of(path)
    if not actual.startswith(expected):
        if delete_on_mismatch:
            path.unlink(missing_ok=True)
        raise HashMismatch(source, expected, actual, deleted=delete_on_mismatch)
    return actual


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _reason(error: BaseException) -> str:
    """The informative part of a requests/urllib3 error ('Connection refused'), not its wrapper chain."""
    text = str(error)
    match = ERRNO_TEXT.search(text)
    if match:
        return match.group(1).strip()
    match = BROKEN_TEXT.search(text)
    if match:
        return match.group(0).strip()
    return text[:200] or type(error).__name__


@contextlib.contextmanager
def _progress(total: int | None, initial: int, label: str, enabled: bool) -> Iterator[ProgressBar]:
    with tqdm(total=total, initial=initial, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
              disable=not enabled, leave=False) as bar:
        yield bar


def _content_range(header: str | None) -> tuple[int, int | None]:
    """(first byte, total size or None) of a 206 answer."""
    match = CONTENT_RANGE.fullmatch((header or "").strip())
    if not match:
        raise DownloadError(f"unusable Content-Range {header!r} in a partial answer")
    return int(match.group(1)), None if match.group(3) == "*" else int(match.group(3))


def _attempt(http: requests.Session, url: str, partial: Path, timeouts: Timeouts, progress: bool) -> None:
    """One request: append the rest of the file to `partial` (or rewrite it when the server ignores Range)."""
    have = _size(partial)
    # identity: a transparently gunzipped body would not match Content-Length or byte ranges.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    host = urlsplit(url).netloc
    try:
        response = http.get(url, headers=headers, stream=True, timeout=(timeouts.connect, timeouts.read))
    except requests.exceptions.ConnectTimeout:
        raise Unreachable(f"no connection to {host} within {timeouts.connect:g} s") from None
    except requests.exceptions.ReadTimeout:
        raise Unreachable(f"{host} accepted the connection but did not answer within {timeouts.read:g} s") from None
    except requests.exceptions.ConnectionError as error:
        raise Unreachable(f"cannot connect to {host}: {_reason(error)}") from None
    with response:
        status = response.status_code
        if status == 416 and have:
            return  # we already hold every byte; the hash decides whether they are the right ones
        if status in TRANSIENT_STATUSES:
            raise TransientStatus(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise DownloadError(f"HTTP {status} {response.reason}")
        if status == 206 and have:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                raise DownloadError(f"asked for bytes from {have}, the server sent from {start}")
            mode = "ab"
        elif status == 200:
            mode, have = "wb", 0  # no Range asked, or the server ignores it: start over
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"unexpected HTTP {status} {response.reason}")
        received = 0
        with partial.open(mode) as handle, _progress(total, have, partial.name, progress) as bar:
            try:
                for chunk in response.iter_content(CHUNK_BYTES):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except requests.exceptions.RequestException as error:  # cut connection, read timeout, short body
                raise Interrupted(f"transfer interrupted: {_reason(error)}", received) from None
    if total is not None and _size(partial) < total:
        raise Interrupted(f"transfer ended after {_size(partial)} of {total} bytes", received)


def download(url: str, partial: Path, *, timeouts: Timeouts = DEFAULT_TIMEOUTS, progress: bool = False,
             max_attempts: int = MAX_ATTEMPTS, session: requests.Session | None = None,
             sleep: Callable[[float], None] = time.sleep) -> None:
    """Bring `partial` to the whole content of `url`, resuming from what it already holds.

    Raises Unreachable at once (no retry: a host that does not answer will not answer a second later either),
    DownloadError for a refusal (404...), and DownloadError after `max_attempts` or after an attempt that
    made no progress; the bytes received so far stay in `partial` for the next call.
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    http = session or requests.Session()
    try:
        for attempt in range(1, max_attempts + 1):
            try:
                _attempt(http, url, partial, timeouts, progress)
                return
            except TransientStatus as error:
                failure: DownloadError = error
                wait = BACKOFF_S * 2 ** (attempt - 1)
            except Interrupted as error:
                failure, wait = error, 0.0
                if not error.received:
                    break  # an attempt that brings nothing would not bring anything the next time either
            if attempt < max_attempts:
                log.warning("%s: %s; retrying from byte %d (attempt %d of %d)", url, failure, _size(partial),
                            attempt + 1, max_attempts)
                sleep(wait)
    finally:
        if session is None:
            http.close()
    kept = f"; {_size(partial)} bytes kept in {partial}, the next call resumes" if _size(partial) else ""
    raise DownloadError(f"{failure} (after {attempt} attempt{'s' if attempt > 1 else ''}){kept}")
