"""Bounds on a JSON body's structure, checked before it is parsed.

The body size is bounded (POSE_MAX_BODY_BYTES, after decompression too), but not what a size buys: 64 MB of
`[],` is 21 million lists, about 2 GB of Python objects, built by `json.loads` in one call that holds the GIL
for seconds. So the structure is counted first: it stops at the first value over `max_values` or the first
level over MAX_JSON_DEPTH. Strings (base64 images) are skipped whole by memchr; only structural characters
reach the Python loop, and the regex engine that finds them is given at most WINDOW bytes per call, so a long
run of filler cannot hold the GIL (and the event loop) for long. Measured on 64 MB bodies: the `[],` bomb is
refused in 0.2 s, 64 MB of spaces scanned in 0.9 s with the event loop's thread waiting at most ~40 ms.

Values are counted as separators and containers (`,` `[` `{`): an upper bound of the values in the document.
"""

from __future__ import annotations

import re

from posecore.errors import PoseError

MAX_JSON_DEPTH = 32  # a v2 request nests 11 deep at most (a rank-8 tensor's data); /v1 batches 4
WINDOW = 256 * 1024  # bytes searched by one call into the regex engine: it holds the GIL meanwhile

MAX_BACKSLASH_RUN = 65536  # escaped backslashes in a row: no valid request has them, each is rescanned

_STRUCTURE = re.compile(rb'["\[\]{},]')
_QUOTE = ord('"')
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


def json_value_limit(max_items: int, max_boxes: int) -> int:
    """The most JSON values a body may hold: twice what the largest valid call needs (every image with every
    box, 5 numbers each, as nested lists, and its box_image_index), and at least 10,000."""
    return max(10_000, 2 * max_items * (max_boxes * 7 + 8))


def check_json_shape(body: bytes, max_values: int, what: str = "the body") -> None:
    """Raise PoseError('json_too_complex', 413) when `body` holds more than `max_values` values (an escaped
    quote counts as one too) or nests deeper than MAX_JSON_DEPTH, and 'invalid_json' for an unterminated
    string. CPU-bound: call it off the event loop; no single call into C scans more than WINDOW bytes, except
    memchr over a string, so the event loop's thread gets the GIL in between."""
    values = depth = 0
    pos, size = 0, len(body)

    def count(more: int) -> None:
        nonlocal values
        values += more
        if values > max_values:
            raise PoseError("json_too_complex", f"{what} holds over {max_values} JSON values; no valid request "
                            "needs as many")

    while pos < size:
        found = _STRUCTURE.search(body, pos, min(size, pos + WINDOW))
        if found is None:
            pos += WINDOW
            continue
        char, pos = body[found.start()], found.end()
        if char == _QUOTE:
            while True:  # to the closing quote: the first one not escaped by an odd run of backslashes
                end = body.find(b'"', pos)
                if end < 0:
                    raise PoseError("invalid_json", f"{what} is not valid JSON (a string is not terminated)")
                pos = end + 1
                if _backslashes_before(body, end, what) % 2 == 0:
                    break
                count(1)
        elif char in _CLOSE:
            depth -= 1
        else:
            count(1)
            if char in _OPEN:
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise PoseError("json_too_complex", f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")


def _backslashes_before(body: bytes, end: int, what: str) -> int:
    """The length of the run of backslashes just before `end` (looked at in doubling slices, in C)."""
    run, width = 0, 16
    while True:
        start = max(0, end - run - width)
        chunk = body[start:end - run]
        kept = len(chunk.rstrip(b"\\"))
        run += len(chunk) - kept
        if run > MAX_BACKSLASH_RUN:
            raise PoseError("json_too_complex", f"{what} has a run of over {MAX_BACKSLASH_RUN} backslashes")
        if kept or start == 0:
            return run
        width *= 2
