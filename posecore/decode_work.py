"""Bounds on decoding work, read from an image's container structure before any decoder sees the bytes.

The pixel limit bounds the size of the result, not the work to get there. Three formats let a small file buy
far more work than its pixel count suggests, and each is bounded here from its structure alone:

- JPEG: a progressive decoder runs one pass over the whole image per scan, and a scan costs ~10 bytes on the
  wire (an SOS header with no entropy data still makes libjpeg process every block). A 700 KB file with thousands
  of scans decodes for tens of seconds. The markers are walked here (entropy-coded data skipped as libjpeg skips
  it: 0xFF00 is a stuffed byte, 0xFFD0-D7 are restart markers, runs of 0xFF are fill) and the scans counted.
  libjpeg's default progressive script writes 10 scans for a colour image, encoders that optimise scans a few
  more; MAX_JPEG_SCANS leaves a wide margin (nvImageCodec caps at 256; libjpeg-turbo itself has no default cap).
  Pillow also parses every marker segment before the first scan in Python, byte by byte across junk, so the
  number of segments and the junk before the first scan are bounded too.
- PNG: Pillow walks the chunks in Python (~2 us each); 20 MB of empty chunks is over a million of them.
  Inflating IDAT is already bounded: the decoder stops when the image (pixel-limited) is full.
- BMP: Pillow decodes RLE4/RLE8 in Python, one loop turn per 2-byte opcode, holding the GIL (~0.25 s per MB).
  RLE data is bounded in bytes; uncompressed BMP costs one copy.

WebP needs nothing here: an animated file is refused from its frame count before decoding (imaging.py), and a
still frame's work is bounded by its pixels. Every refusal is PoseError 'image_too_complex'.
"""

from __future__ import annotations

import re

from posecore.errors import PoseError

MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 4096  # a photo has tens; split ICC/XMP metadata a few hundred at most
MAX_JPEG_JUNK_BYTES = 64 * 1024  # extraneous bytes between marker segments before the first scan
MAX_PNG_CHUNKS = 16384  # a 20 MB PNG written in libpng's 8 KiB IDAT chunks has ~2600
MAX_BMP_RLE_BYTES = 1024 * 1024

# 0xFF followed by a marker code: not 0x00 (a stuffed 0xFF in entropy data), not 0xD0-0xD7 (restart markers,
# parameterless and part of a scan's data), not 0xFF (fill before a marker).
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_SOS, _EOI, _SOI, _TEM = 0xDA, 0xD9, 0xD8, 0x01

_BMP_RLE = {1: "RLE8", 2: "RLE4"}


def check_decoding_work(fmt: str, data: bytes) -> None:
    """Raise PoseError('image_too_complex') when decoding `data` (of sniffed format `fmt`) would cost far more
    than its pixel count suggests. Malformed structure is left to the decoder to refuse as corrupt."""
    if fmt == "JPEG":
        _check_jpeg(data)
    elif fmt == "PNG":
        _check_png(data)
    elif fmt == "BMP":
        _check_bmp(data)


def count_jpeg_scans(data: bytes) -> int:
    """The number of scans (SOS segments) up to EOI; raises PoseError past the limits (walks no further)."""
    scans = segments = junk = 0
    pos, size = 2, len(data)  # after SOI
    while True:
        found = _JPEG_MARKER.search(data, pos)
        if found is None:
            return scans  # truncated: the decoder refuses it
        if scans == 0:
            junk += found.start() - pos  # before the first scan, skipped bytes are junk, not entropy data
            if junk > MAX_JPEG_JUNK_BYTES:
                raise PoseError("image_too_complex", f"The JPEG has over {MAX_JPEG_JUNK_BYTES} extraneous bytes "
                                "between its header segments.")
        code, pos = data[found.end() - 1], found.end()
        if code == _EOI:
            return scans
        if code in (_SOI, _TEM):  # parameterless
            continue
        if pos + 2 > size:
            return scans
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise PoseError("image_too_complex", f"The JPEG has over {MAX_JPEG_SEGMENTS} marker segments.")
        if code == _SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise PoseError("image_too_complex", f"The JPEG has over {MAX_JPEG_SCANS} scans; each scan is a "
                                "pass over the whole image (a normal progressive JPEG has about 10).")
        # libjpeg skips a segment by its declared length, and past the two length bytes even when that is < 2
        pos += max(int.from_bytes(data[pos : pos + 2], "big"), 2)


def _check_jpeg(data: bytes) -> None:
    count_jpeg_scans(data)


def _check_png(data: bytes) -> None:
    pos, size, chunks = 8, len(data), 0
    while pos + 8 <= size:
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise PoseError("image_too_complex", f"The PNG has over {MAX_PNG_CHUNKS} chunks.")
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + length


def _check_bmp(data: bytes) -> None:
    if len(data) < 34 or int.from_bytes(data[14:18], "little") < 40:  # the OS/2 core header has no compression
        return
    kind = _BMP_RLE.get(int.from_bytes(data[30:34], "little"))
    offset = int.from_bytes(data[10:14], "little")
    if kind is not None and len(data) - offset > MAX_BMP_RLE_BYTES:
        raise PoseError("image_too_complex", f"The {kind} BMP has {len(data) - offset} bytes of compressed data; "
                        f"at most {MAX_BMP_RLE_BYTES} are decoded (send PNG or an uncompressed BMP).")
