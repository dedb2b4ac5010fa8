"""Compressed request bodies (tritonclient's request_compression_algorithm: gzip or deflate), inflated with a
bound: a small compressed body must not become a huge one (the same limit as the body itself)."""

from __future__ import annotations

import zlib

from posecore.errors import PoseError

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def inflate(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in WBITS:
        raise PoseError("unsupported_media_type", f"Content-Encoding {encoding[:20]!r} is not supported; send gzip, "
                        "deflate or an uncompressed body")
    inflater = zlib.decompressobj(WBITS[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise PoseError("invalid_request", f"the body is not valid {encoding} data") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PoseError("payload_too_large", f"the {encoding} body inflates beyond the {limit}-byte limit")
    if not inflater.eof:
        raise PoseError("invalid_request", f"the {encoding} body is truncated")
    return data
