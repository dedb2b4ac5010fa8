"""Bounds on a JSON body's structure, checked before it is parsed.

The body size is bounded (POSE_MAX_BODY_BYTES, after decompression too), but not what a size buys: 64 MB of
`[],` is 21 million lists, about 2 GB of Python objects, built by `json.loads` in one call that holds the GIL
for seconds. So the structure is counted first, in a scan whose cost is bounded by the limits themselves: it
stops at the first value over `max_values` or the first level over MAX_JSON_DEPTH. Strings (base64 images) are
skipped whole by the regular expression, in C; only structural characters reach the Python loop.

Values are counted as separators and containers (`,` `[` `{`): an upper bound of the values in the document.
"""

from __future__ import annotations

import re

from posecore.errors import PoseError

MAX_JSON_DEPTH = 32  # a v2 request nests 11 deep at most (a rank-8 tensor's data); /v1 batches 4

# a whole string (escapes included), an unterminated string's opening quote, or a structural character
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|"|[\[\]{},]')
_QUOTE = ord('"')
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


def json_value_limit(max_items: int, max_boxes: int) -> int:
    """The most JSON values a body may hold: twice what the largest valid call needs (every image with every
    box, 5 numbers each, as nested lists, and its box_image_index), and at least 10,000."""
    return max(10_000, 2 * max_items * (max_boxes * 7 + 8))


def check_json_shape(body: bytes, max_values: int, what: str = "the body") -> None:
    """Raise PoseError('json_too_complex', 413) when `body` holds more than `max_values` values or nests deeper
    than MAX_JSON_DEPTH, and 'invalid_json' for an unterminated string. CPU-bound: call it off the event loop."""
    openers = body.count(b"[") + body.count(b"{")
    if openers <= MAX_JSON_DEPTH and openers + body.count(b",") <= max_values:
        return  # the cheap upper bounds hold already (counted in strings too)
    values = depth = 0
    for token in _TOKENS.finditer(body):
        char = body[token.start()]
        if char == _QUOTE:
            if token.end() - token.start() == 1:
                raise PoseError("invalid_json", f"{what} is not valid JSON (a string is not terminated)")
            continue
        if char in _CLOSE:
            depth -= 1
            continue
        values += 1
        if values > max_values:
            raise PoseError("json_too_complex", f"{what} holds over {max_values} JSON values; no valid request "
                            "needs as many")
        if char in _OPEN:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise PoseError("json_too_complex", f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")
