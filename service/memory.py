"""Giving freed memory back to the system after a large request.

After a 64 MB body, a 40 MP image or a refused JSON bomb, Python frees its objects but glibc keeps the pages:
each thread that allocated gets its own malloc arena (up to 8 per core), an arena only shrinks from its top,
and buffers over 128 KB stop being mmapped once the dynamic threshold has grown (to 32 MB). The process then
idles hundreds of MB above its baseline, a little more after each burst until every arena is as large as its
largest burst: not a leak (it is reused), but memory a Kubernetes limit counts. Two bounds, both measured in
the README's Robustness section:

- At most MALLOC_ARENA_MAX=2 arenas: set in the images' environment (glibc reads it at start-up), and by
  `limit_arenas` for `python -m service` started without it (mallopt, before the serving threads exist).
- `release_after(size)`: after a request that handled at least TRIM_AFTER_BYTES, `malloc_trim(0)` in a
  background thread (one at a time) returns every arena's free pages. It costs milliseconds on a large heap,
  off the event loop (ctypes releases the GIL around the call).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 8 * 2**20  # a request body, or a decoded image's RGB array, of at least this much
HANDLED_BYTES = "handled_bytes"  # scope["state"] key: a body's size after inflating, when larger than on the wire


def _libc_function(name: str) -> Any:
    """glibc's `name`, or None where there is none (musl and macOS have neither malloc_trim nor these mallopt
    parameters)."""
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):
        return None


def _malloc_trim() -> Any:
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()
M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def limit_arenas(environ: dict[str, str]) -> bool:
    """mallopt(M_ARENA_MAX, 2) unless MALLOC_ARENA_MAX is set (the operator's choice wins). True when set."""
    if "MALLOC_ARENA_MAX" in environ:
        return False
    mallopt = _libc_function("mallopt")
    return bool(mallopt is not None and mallopt(M_ARENA_MAX, ARENAS) == 1)


_state = threading.Lock()
_running = False  # a trim thread is at work
_again = False  # a large request finished while it was: trim once more, after it


def release_after(size_bytes: int) -> bool:
    """Trim the allocator in the background when `size_bytes` was large. True when a trim was started or queued
    (one thread at a time; a request that finishes during a trim gets one more, so the last one is never lost)."""
    global _running, _again
    if _TRIM is None or size_bytes < TRIM_AFTER_BYTES:
        return False
    with _state:
        if _running:
            _again = True
            return True
        _running = True
    threading.Thread(target=_trim, name="malloc-trim", daemon=True).start()
    return True


def _trim() -> None:
    global _running, _again
    while True:
        try:
            assert _TRIM is not None
            _TRIM(0)
        except Exception:  # never let housekeeping fail a request
            log.exception("malloc_trim failed")
        with _state:
            if not _again:
                _running = False
                return
            _again = False
