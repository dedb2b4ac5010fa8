"""The second hostile round (issue 11): each test replays one attack as it was found and checks the fix.

Decode-time bombs are checked in process; the transport attacks (hang-ups, huge headers, slowloris, dribbled
bodies) need the real server and raw sockets, so they run against tests/live_server.py's subprocess.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from service.decode_work import MAX_BMP_RLE_BYTES, MAX_JPEG_SCANS, MAX_PNG_CHUNKS, count_jpeg_scans
from service.errors import PoseError
from service.imaging import decode_image
from service.main import create_app
from service.settings import Settings
from tests.helpers import assert_error, encode, photo

MAX_BYTES, MAX_PIXELS = 20 * 1024 * 1024, 40_000_000


# ---- 1. decode-time bombs ---------------------------------------------------------------------------------------
def _scans(data: bytes) -> list[bytes]:
    """The SOS segments (marker + header) of a JPEG written by Pillow, in order."""
    segments, pos = [], data.index(b"\xff\xda")
    while pos >= 0:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append(data[pos : pos + 2 + length])
        pos = data.find(b"\xff\xda", pos + 2 + length)
    return segments


def many_scan_jpeg(width: int, height: int, scans: int) -> tuple[bytes, bytes]:
    """(a normal progressive JPEG, the same file with `scans` extra scans). The extra scans repeat the last scan's
    header with no entropy data: ~10 bytes each on the wire, a full pass over the image each for the decoder."""
    normal = encode(photo(width, height), "JPEG", quality=85, progressive=True)
    last_scan = _scans(normal)[-1]
    assert normal.endswith(b"\xff\xd9")
    return normal, normal[:-2] + last_scan * scans + b"\xff\xd9"


def _decode_seconds(data: bytes) -> float:
    started = time.perf_counter()
    Image.open(io.BytesIO(data)).load()
    return time.perf_counter() - started


def test_progressive_jpeg_with_thousands_of_scans_is_refused_without_decoding(monkeypatch, tiny_onnx):
    normal, bomb = many_scan_jpeg(1024, 1024, 5000)
    assert len(bomb) < len(normal) + 60_000 and count_jpeg_scans(normal) == 10
    # the attack: Pillow alone spends many times a normal decode on it (both timed here, on the same machine)
    normal_s = min(_decode_seconds(normal) for _ in range(3))
    assert _decode_seconds(bomb) > 5 * normal_s

    def no_decoding(self):
        raise AssertionError("a pixel decoder ran")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    started = time.perf_counter()
    with pytest.raises(PoseError) as refused:
        decode_image(bomb, MAX_BYTES, MAX_PIXELS)
    assert refused.value.code == "image_too_complex" and str(MAX_JPEG_SCANS) in refused.value.message
    assert time.perf_counter() - started < normal_s  # walking the markers is cheaper than decoding once
    monkeypatch.undo()

    with TestClient(create_app(Settings(model_path=tiny_onnx, intra_op_threads=1))) as client:
        response = client.post("/v1/pose", content=bomb, headers={"content-type": "image/jpeg"})
        assert_error(response, 422, "image_too_complex")
        assert client.post("/v1/pose", content=normal, headers={"content-type": "image/jpeg"}).status_code == 200


def test_the_scan_count_sees_through_stuffing_restarts_fill_and_junk():
    pixels = photo(256, 192)
    assert count_jpeg_scans(encode(pixels, "JPEG")) == 1
    restarts = encode(pixels, "JPEG", restart_marker_blocks=1, progressive=True)
    assert restarts.count(b"\xff\xd0") > 10 and count_jpeg_scans(restarts) == 10  # RSTn inside scans are data
    normal, _ = many_scan_jpeg(64, 64, 0)
    last = _scans(normal)[-1]
    # fill bytes before a marker and a stuffed 0xFF00 after a scan header are not markers ...
    assert count_jpeg_scans(normal[:-2] + b"\xff\xff\xff" + last + b"\x00\xff\x00\x12" + b"\xff\xd9") == 11
    # ... a scan behind junk still counts (libjpeg resynchronises on the next marker, so must the count)
    assert count_jpeg_scans(normal[:-2] + b"junk" + last * 3 + b"\xff\xd9") == 13
    # the limit is exact: MAX_JPEG_SCANS passes, one more is refused
    assert count_jpeg_scans(normal[:-2] + last * (MAX_JPEG_SCANS - 10) + b"\xff\xd9") == MAX_JPEG_SCANS
    with pytest.raises(PoseError, match="scans"):
        count_jpeg_scans(normal[:-2] + last * (MAX_JPEG_SCANS - 9) + b"\xff\xd9")


def test_segment_and_junk_floods_before_the_first_scan_are_refused():
    normal = encode(photo(64, 64), "JPEG")
    app0_end = 4 + int.from_bytes(normal[4:6], "big")
    comments = normal[:app0_end] + b"\xff\xfe\x00\x02" * 100_000 + normal[app0_end:]  # Pillow: Python per segment
    junk = normal[:app0_end] + b"\x00" * 200_000 + normal[app0_end:]  # Pillow: Python per byte
    for bomb in (comments, junk):
        with pytest.raises(PoseError) as refused:
            decode_image(bomb, MAX_BYTES, MAX_PIXELS)
        assert refused.value.code == "image_too_complex"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import zlib

    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def test_png_chunk_flood_is_refused_and_many_idat_chunks_are_not():
    normal = encode(photo(64, 64), "PNG")
    ihdr_end = 8 + 25
    flood = normal[:ihdr_end] + _png_chunk(b"prVt", b"") * (MAX_PNG_CHUNKS + 1) + normal[ihdr_end:]
    with pytest.raises(PoseError) as refused:
        decode_image(flood, MAX_BYTES, MAX_PIXELS)
    assert refused.value.code == "image_too_complex"
    # libpng-style 8 KiB IDAT chunks of a large image stay far below the limit
    big = encode(np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8), "PNG")
    assert decode_image(big, MAX_BYTES, MAX_PIXELS).shape == (600, 800, 3)


def test_large_rle_bmp_is_refused_small_one_decodes():
    def rle8_bmp(width: int, height: int) -> bytes:
        header = bytearray(encode(Image.new("P", (width, height)), "BMP"))
        offset = int.from_bytes(header[10:14], "little")
        header = header[:offset]
        header[30:34] = (1).to_bytes(4, "little")  # BI_RLE8
        row = b"\x01\x07" * width + b"\x00\x00"  # one pixel per opcode: Pillow's slowest case, in Python
        return bytes(header) + row * height + b"\x00\x01"

    assert decode_image(rle8_bmp(64, 64), MAX_BYTES, MAX_PIXELS).shape == (64, 64, 3)
    big = rle8_bmp(1000, 600)
    assert len(big) > MAX_BMP_RLE_BYTES
    with pytest.raises(PoseError) as refused:
        decode_image(big, MAX_BYTES, MAX_PIXELS)
    assert refused.value.code == "image_too_complex"
