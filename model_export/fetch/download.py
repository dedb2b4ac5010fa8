"""Streamed, resumable HTTP download of one file, and its sha256 verification.

The bytes go to `NAME.partial`; a transfer cut short is resumed with an HTTP Range request, by a bounded number
of further attempts in the same call (each must make progress) and by the next call, which finds the partial
file. Nothing here moves a file into place: the caller does, once `verify_file` has passed. The size limit and
the total deadline (model_export.fetch.limits) bound every call; URLs in messages are redacted.
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

from model_export.fetch.body import stream_body
from model_export.fetch.errors import (
    DownloadError,
    FetchDeadlineExceeded,
    HashMismatch,
    Interrupted,
    TooLarge,
    TransientStatus,
    Unreachable,
    UnwantedEncoding,
)
from model_export.fetch.limits import DEFAULT_LIMITS, Deadline, FetchLimits
from model_export.fetch.redact import Redactor, redact_url

__all__ = [
    "DownloadError",
    "FetchDeadlineExceeded",
    "HashMismatch",
    "Interrupted",
    "Timeouts",
    "TooLarge",
    "TransientStatus",
    "Unreachable",
    "UnwantedEncoding",
    "download",
    "sha256_of",
    "verify_file",
]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # per call; a new attempt follows only a transfer that made progress, or a transient status
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_S = 1.0  # before retrying a transient status, doubled each time
USER_AGENT = "hrnet-pose-fetch/1"
CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20}|\*)")
DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit() accepts '²'
ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
BROKEN_TEXT = re.compile(r"Connection broken: [^'\"]+")


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection, and for each read (the first answer, then every chunk)."""

    connect: float = 10.0
    read: float = 30.0


DEFAULT_TIMEOUTS = Timeouts()


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
        raise DownloadError(f"unusable Content-Range {(header or '')[:80]!r} in a partial answer")
    return int(match.group(1)), None if match.group(3) == "*" else int(match.group(3))


def _declared_size(response: requests.Response, have: int) -> tuple[str, int | None]:
    """(file mode, whole file's size or None) from a 200 or 206 answer's headers."""
    status = response.status_code
    if status == 206 and have:
        start, total = _content_range(response.headers.get("Content-Range"))
        if start != have:
            raise DownloadError(f"asked for bytes from {have}, the server sent from {start}")
        return "ab", total
    if status == 200:  # no Range asked, or the server ignores it: start over
        length = (response.headers.get("Content-Length") or "").strip()
        return "wb", int(length) if DIGITS.fullmatch(length) else None
    raise DownloadError(f"unexpected HTTP {status} {response.reason}")


def _attempt(http: requests.Session, url: str, partial: Path, timeouts: Timeouts, limits: FetchLimits,
             deadline: Deadline, progress: bool) -> None:
    """One request: append the rest of the file to `partial` (or rewrite it when the server ignores Range)."""
    have = _size(partial)
    # identity: a transparently gunzipped body would not match Content-Length or byte ranges.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    host = urlsplit(redact_url(url)).netloc
    read_timeout = deadline.bound(timeouts.read)
    try:
        response = http.get(url, headers=headers, stream=True,
                            timeout=(min(timeouts.connect, read_timeout), read_timeout))
    except requests.exceptions.ConnectTimeout:
        deadline.check()
        raise Unreachable(f"no connection to {host} within {timeouts.connect:g} s") from None
    except requests.exceptions.ReadTimeout:
        deadline.check()
        raise Unreachable(f"{host} accepted the connection but did not answer within {read_timeout:g} s") from None
    except requests.exceptions.ConnectionError as error:
        raise Unreachable(f"cannot connect to {host}: {_reason(error)}") from None
    except requests.exceptions.RequestException as error:  # a redirect loop, an unusable URL...
        raise DownloadError(f"request to {host} failed: {type(error).__name__}: {_reason(error)}") from None
    with response:
        status = response.status_code
        if status == 416 and have:
            return  # we already hold every byte; the hash decides whether they are the right ones
        if status in TRANSIENT_STATUSES:
            raise TransientStatus(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise DownloadError(f"HTTP {status} {response.reason}")
        mode, total = _declared_size(response, have)
        if mode == "wb":
            have = 0
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise UnwantedEncoding(f"the server sent the file with Content-Encoding {encoding[:40]!r}, "
                                   "though only 'identity' was asked for; refusing bytes that are not the file's")
        if total is not None and total > limits.max_bytes:
            raise TooLarge(f"the server announces {total} bytes, over the size limit of {limits.max_bytes} bytes")
        with partial.open(mode) as handle, _progress(total, have, partial.name, progress) as bar:
            received = stream_body(response, handle, already=have, max_bytes=limits.max_bytes, deadline=deadline,
                                   read_timeout=timeouts.read, on_chunk=bar.update, reason=_reason)
    if total is not None and _size(partial) < total:
        raise Interrupted(f"transfer ended after {_size(partial)} of {total} bytes", received)


def download(url: str, partial: Path, *, timeouts: Timeouts = DEFAULT_TIMEOUTS,
             limits: FetchLimits = DEFAULT_LIMITS, progress: bool = False, max_attempts: int = MAX_ATTEMPTS,
             session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """Bring `partial` to the whole content of `url`, resuming from what it already holds.

    Raises Unreachable at once (no retry: a host that does not answer will not answer a second later either),
    DownloadError for a refusal (404...), and DownloadError after `max_attempts` or after an attempt that
    made no progress; the bytes received so far stay in `partial` for the next call. TooLarge (a file over
    `limits.max_bytes`, announced or streamed) deletes `partial`; FetchDeadlineExceeded ends the call once
    `limits.deadline_s` has passed (counted from this call's start). No message carries the URL's credentials.
    """
    deadline = Deadline(limits.deadline_s)
    redact = Redactor([url])
    shown = redact_url(url)
    partial.parent.mkdir(parents=True, exist_ok=True)
    if _size(partial) > limits.max_bytes:  # left by a call with a larger limit, or by an older version
        log.warning("%s holds %d bytes, over the size limit of %d: deleted, not resumed", partial,
                    _size(partial), limits.max_bytes)
        partial.unlink()
    http = session or requests.Session()
    try:
        for attempt in range(1, max_attempts + 1):
            try:
                _attempt(http, url, partial, timeouts, limits, deadline, progress)
                return
            except TooLarge as error:
                partial.unlink(missing_ok=True)
                raise TooLarge(redact(f"{error}; nothing kept")) from None
            except FetchDeadlineExceeded as error:
                raise FetchDeadlineExceeded(redact(f"{error}{_kept(partial)}")) from None
            except TransientStatus as error:
                failure: DownloadError = error
                wait = BACKOFF_S * 2 ** (attempt - 1)
            except Interrupted as error:
                failure, wait = error, 0.0
                if not error.received:
                    break  # an attempt that brings nothing would not bring anything the next time either
            except DownloadError as error:
                raise type(error)(redact(str(error))) from None
            if attempt < max_attempts:
                if wait >= deadline.remaining():
                    break  # the back-off would outlast the deadline
                log.warning("%s: %s; retrying from byte %d (attempt %d of %d)", shown, redact(str(failure)),
                            _size(partial), attempt + 1, max_attempts)
                sleep(wait)
    finally:
        if session is None:
            http.close()
    raise DownloadError(redact(f"{failure} (after {attempt} attempt{'s' if attempt > 1 else ''}){_kept(partial)}"))


def _kept(partial: Path) -> str:
    return f"; {_size(partial)} bytes kept in {partial}, the next call resumes" if _size(partial) else ""
