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

from posecore.decode_work import MAX_BMP_RLE_BYTES, MAX_JPEG_SCANS, MAX_PNG_CHUNKS, count_jpeg_scans
from posecore.errors import PoseError
from posecore.imaging import decode_image
from service.main import create_app
from service.settings import Settings
from tests.helpers import assert_error, encode, metric_value, photo

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


# ---- the transport: a real server, raw sockets -------------------------------------------------------------------
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def server(tiny_onnx):
    from tests.live_server import LiveServer

    env = {"POSE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "POSE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
           "POSE_BODY_MIN_BYTES_PER_S": "1024", "POSE_KEEP_ALIVE_TIMEOUT_S": "2",
           "POSE_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES)}
    with LiveServer(tiny_onnx, env=env) as live:
        yield live


def _connect(server, timeout_s: float = 15.0):
    import socket

    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(timeout_s)
    return sock


def _read_until_closed(sock) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _metric_lines(server, prefix: str) -> list[str]:
    import httpx

    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith(prefix)]


def _metric(server, name: str, **labels: str) -> float:
    import httpx

    return metric_value(httpx.get(f"{server.base_url}/metrics", timeout=10).text, name, **labels)


def _status_line(response: bytes) -> bytes:
    return response.split(b"\r\n", 1)[0]


def _no_tracebacks(server) -> None:
    records = server.log_records()
    assert not [r for r in records if "exception" in r or "Traceback" in r["message"]], records[-5:]


# ---- 4. client hang-ups ----------------------------------------------------------------------------------------
@pytest.mark.integration  # a live server process
def test_client_hanging_up_mid_upload_is_counted_499_with_one_log_line(server):
    import json as _json

    errors_before = _metric(server, "pose_errors_total", code="internal_error")
    sock = _connect(server)
    part = (b'--XX\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg'
            b"\r\n\r\n" + encode(photo(640, 480), "JPEG")[:30_000])
    sock.sendall(b"POST /v1/pose HTTP/1.1\r\nHost: test\r\nX-Request-ID: hangup-4\r\n"
                 b"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 200000\r\n\r\n" + part)
    time.sleep(0.3)  # the attack: a client that starts an upload, pauses, and leaves (mid-body, not before it)
    sock.close()
    deadline = time.monotonic() + 10
    while _metric(server, "pose_requests_total", endpoint="/v1/pose", status="499") < 1:
        assert time.monotonic() < deadline, _metric_lines(server, "pose_requests_total")
        time.sleep(0.1)  # poll interval
    assert _metric(server, "pose_errors_total", code="client_disconnected") >= 1
    assert _metric(server, "pose_requests_total", endpoint="/v1/pose", status="500") == 0
    assert _metric(server, "pose_errors_total", code="internal_error") == errors_before
    lines = [r for r in server.log_records() if r["request_id"] == "hangup-4"]
    assert len(lines) == 1, lines
    assert lines[0]["status"] == 499 and lines[0]["error_code"] == "client_disconnected" and lines[0]["client"]
    assert "exception" not in lines[0], _json.dumps(lines[0])
    _no_tracebacks(server)


# ---- 5. header size ----------------------------------------------------------------------------------------------
@pytest.mark.integration  # a live server process
def test_huge_header_is_refused_431_at_the_limit_and_livez_stays_responsive(server):
    import threading

    import httpx

    livez: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            livez.append(httpx.get(f"{server.base_url}/livez", timeout=3).status_code)
            time.sleep(0.05)  # probe pace

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        sock = _connect(server)
        # 1 MB of header, but only a little over the limit is sent before reading: the answer must not wait
        # for the rest (the original attack: 32-128 MB headers were read to the end, stalling the event loop)
        huge = b"GET /livez HTTP/1.1\r\nHost: test\r\nX-Filler: " + b"a" * 1_000_000 + b"\r\n\r\n"
        sock.sendall(huge[: MAX_HEADER_BYTES + 4096])
        response = _read_until_closed(sock)
        sock.close()
    finally:
        stop.set()
        prober.join()
    assert _status_line(response) == b"HTTP/1.1 431 Request Header Fields Too Large", response[:200]
    assert b'"request_header_too_large"' in response
    assert livez and set(livez) == {200}
    assert _metric(server, "pose_requests_total", endpoint="unmatched", status="431") >= 1
    assert _metric(server, "pose_errors_total", code="request_header_too_large") >= 1
    refusal = [r for r in server.log_records() if r.get("error_code") == "request_header_too_large"]
    assert refusal and refusal[-1]["client"].startswith("127.0.0.1:") and refusal[-1]["request_id"] != "-"


@pytest.mark.integration  # a live server process
def test_headers_just_under_the_limit_are_served(server):
    sock = _connect(server)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Filler: "
                 + b"a" * (MAX_HEADER_BYTES - 200) + b"\r\n\r\n")
    assert _status_line(_read_until_closed(sock)) == b"HTTP/1.1 200 OK"
    sock.close()


# ---- 6. idle and slow connections --------------------------------------------------------------------------------
@pytest.mark.integration  # a live server process
def test_slowloris_partial_headers_are_answered_408_and_closed(server):
    sockets = [_connect(server) for _ in range(50)]
    started = time.monotonic()
    for sock in sockets:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\nX-Slow: ")  # and never the rest
    answers = [_read_until_closed(sock) for sock in sockets]
    waited = time.monotonic() - started
    for sock in sockets:
        sock.close()
    assert {_status_line(a) for a in answers} == {b"HTTP/1.1 408 Request Timeout"}
    assert all(b'"request_timeout"' in a for a in answers)
    assert waited >= HEADER_TIMEOUT_S * 0.9  # closed by the timeout, not at once


@pytest.mark.integration  # a live server process
def test_an_idle_connection_and_an_idle_keep_alive_connection_are_closed(server):
    idle = _connect(server)
    assert _read_until_closed(idle) == b""  # nothing was asked: closed without an answer
    idle.close()
    kept = _connect(server)
    kept.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = _read_until_closed(kept)  # the answer, then the keep-alive timeout closes the connection
    kept.close()
    assert _status_line(answer) == b"HTTP/1.1 200 OK" and answer.endswith(b'"status":"ok","detail":null}')


@pytest.mark.integration  # a live server process
def test_a_dribbled_body_is_cut_with_408_and_counted_as_such(server):
    before = _metric(server, "pose_requests_total", endpoint="/v1/pose", status="408")
    sock = _connect(server)
    sock.sendall(b"POST /v1/pose HTTP/1.1\r\nHost: test\r\nX-Request-ID: dribble-6\r\nContent-Type: image/jpeg\r\n"
                 b"Content-Length: 100000\r\n\r\n")
    answer = b""
    try:
        for _ in range(100):  # a few bytes per second: the original attack
            sock.sendall(b"x")
            time.sleep(0.2)  # the attack itself: a dribbled body
    except OSError:  # the server closed the connection
        answer = _read_until_closed(sock)
    sock.close()
    assert _status_line(answer) == b"HTTP/1.1 408 Request Timeout", answer[:200]
    assert b'"request_id": "dribble-6"' in answer
    deadline = time.monotonic() + 10
    while _metric(server, "pose_requests_total", endpoint="/v1/pose", status="408") < before + 1:
        assert time.monotonic() < deadline, _metric_lines(server, "pose_requests_total")
        time.sleep(0.1)  # poll interval
    assert _metric(server, "pose_requests_total", endpoint="/v1/pose", status="500") == 0
    lines = [r for r in server.log_records() if r["request_id"] == "dribble-6"]
    assert len(lines) == 1 and lines[0]["status"] == 408 and lines[0]["error_code"] == "request_timeout", lines
    _no_tracebacks(server)


@pytest.mark.integration  # a live server process
def test_a_slow_but_steady_upload_is_not_cut(server):
    body = encode(photo(320, 240), "JPEG")
    sock = _connect(server)
    sock.sendall(b"POST /v1/pose HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: image/jpeg\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode())
    step = max(1, len(body) // 8)
    for offset in range(0, len(body), step):  # spread over ~1.6 s, well over the minimum rate
        sock.sendall(body[offset : offset + step])
        time.sleep(0.2)  # the slow client under test: a steady, slow upload
    assert _status_line(_read_until_closed(sock)) == b"HTTP/1.1 200 OK"
    sock.close()


# ---- 9. HEAD -----------------------------------------------------------------------------------------------------
@pytest.mark.integration  # a live server process
@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/v1/model", "/"])
def test_head_on_get_routes_is_200_without_a_body(server, path):
    import httpx

    head = httpx.head(f"{server.base_url}{path}", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == httpx.get(f"{server.base_url}{path}", timeout=10).headers["content-type"]
    assert head.headers["x-request-id"]


@pytest.mark.integration  # a live server process
def test_pipelined_requests_still_answer_in_order_through_the_limited_protocol(server):
    """The head limit slices what it feeds the parser; pipelining (held up in the first round) must not notice."""
    image = encode(photo(160, 120), "JPEG")
    pose = (b"POST /v1/pose HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {len(image)}\r\n\r\n".encode() + image)
    filler = b"X-Filler: " + b"a" * (MAX_HEADER_BYTES // 2) + b"\r\n"  # two of these heads exceed one limit
    livez = b"GET /livez HTTP/1.1\r\nHost: test\r\n" + filler + b"\r\n"
    last = b"GET /readyz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    sock = _connect(server)
    sock.sendall(livez + pose + livez + livez + last)
    answer = _read_until_closed(sock)
    sock.close()
    assert answer.count(b"HTTP/1.1 ") == answer.count(b"HTTP/1.1 200 OK\r\n") == 5, answer[-500:]
    assert answer.count(b'"status":"ok"') == 3 and answer.count(b'"status":"ready"') == 1


@pytest.mark.integration  # a live server process
def test_invalid_http_is_refused_counted_and_logged_with_the_client(server):
    """'Also seen': uvicorn's "Invalid HTTP request received." lines had no request ID or client. A smuggling
    attempt (Content-Length and Transfer-Encoding together, refused in the first round) must stay refused."""
    before = _metric(server, "pose_requests_total", endpoint="unmatched", status="400")
    sock = _connect(server)
    sock.sendall(b"POST /v1/pose HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\nGET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = _read_until_closed(sock)
    sock.close()
    assert _status_line(answer) == b"HTTP/1.1 400 Bad Request" and answer.count(b"HTTP/1.1 ") == 1, answer
    assert _metric(server, "pose_requests_total", endpoint="unmatched", status="400") == before + 1
    invalid = [r for r in server.log_records() if r["message"].startswith("Invalid HTTP request")]
    assert invalid and invalid[-1]["client"].startswith("127.0.0.1:")
