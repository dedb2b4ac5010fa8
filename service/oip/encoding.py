"""Compressed request bodies (tritonclient's request_compression_algorithm: gzip or deflate), inflated with a
bound: a small compressed body must not become a huge one (the same limit as the body itself).

Strict about what follows the data: a gzip body may be several members (RFC 1952; `cat a.gz b.gz`), each
inflated in turn under the one bound, but anything after the last member that is not a member is refused, as
is anything after a deflate stream. Calls it off the event loop: inflating 64 MB takes a while.
"""

from __future__ import annotations

import zlib

from posecore.errors import PoseError

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
MAX_GZIP_MEMBERS = 64  # concatenated files; far more is a way to make the server loop over 20-byte members


def inflate(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in WBITS:
        raise PoseError("unsupported_media_type", f"Content-Encoding {encoding[:20]!r} is not supported; send gzip, "
                        "deflate or an uncompressed body")
    parts: list[bytes] = []
    size, rest = 0, body
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(WBITS[encoding])
        try:
            part = inflater.decompress(rest, limit - size + 1)
        except zlib.error:
            raise PoseError("invalid_request", f"the body is not valid {encoding} data"
                            + (" after its first member" if parts else "")) from None
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise PoseError("payload_too_large", f"the {encoding} body inflates beyond the {limit}-byte limit")
        if not inflater.eof:
            raise PoseError("invalid_request", f"the {encoding} body is truncated")
        parts.append(part)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
        if encoding == "deflate":
            raise PoseError("invalid_request", f"{len(rest)} bytes follow the deflate data")
    raise PoseError("invalid_request", f"the gzip body has over {MAX_GZIP_MEMBERS} members")
