"""Stream one HTTP answer's body into the partial file, within the size limit and the total deadline.

The body is read with `read1`, which returns whatever one socket read brought, so the deadline is checked after
every read however slowly the server drips; each read waits at most min(read timeout, time left). The bytes are
written as they arrived on the wire: urllib3 is told not to decode them (the caller has already refused any
Content-Encoding but identity, so this is a second guard, not the first).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import IO, Any

import requests
import urllib3

from model_export.fetch.errors import Interrupted, TooLarge
from model_export.fetch.limits import Deadline

CHUNK_BYTES = 1 << 16  # the most one read returns; read1 returns what one socket read brought, often less


def _socket_of(raw: Any) -> socket.socket | None:
    """The response's socket, to bound each read by the deadline (None if urllib3 hides it: then each read is
    bounded by the read timeout alone, and the deadline is checked between reads)."""
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def stream_body(response: requests.Response, handle: IO[bytes], *, already: int, max_bytes: int,
                deadline: Deadline, read_timeout: float, on_chunk: Callable[[int], object],
                reason: Callable[[BaseException], str]) -> int:
    """Append the body to `handle`; returns the bytes this answer brought. `already`: the partial file's size
    before. Raises TooLarge before writing the chunk that would pass `max_bytes`, Interrupted on a cut or a
    stalled read, FetchDeadlineExceeded when the deadline passes."""
    raw = response.raw
    sock = _socket_of(raw)
    received = 0
    while True:
        timeout = deadline.bound(read_timeout)
        if sock is not None:
            sock.settimeout(timeout)
        try:
            chunk = raw.read1(CHUNK_BYTES, decode_content=False)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            deadline.check()  # a read cut short by the deadline is the deadline's failure
            raise Interrupted(f"transfer interrupted: {reason(error)}", received) from None
        if not chunk:
            return received
        if already + received + len(chunk) > max_bytes:
            raise TooLarge(f"the file is larger than the size limit of {max_bytes} bytes")
        handle.write(chunk)
        received += len(chunk)
        on_chunk(len(chunk))
