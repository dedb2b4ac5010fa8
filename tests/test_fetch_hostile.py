"""`fetch` against a hostile server on 127.0.0.1 (issue 18, points 5 and 6): credentials never printed, a size
limit checked before and while streaming, unasked-for compression refused, one total deadline.

Each test replays an attack that got through before: a mirror's password in the INFO line, the WARNINGs and the
final error; a server claiming 2 GiB and sending what it likes; an endless body; a gzip body decoded to hundreds
of MB despite `Accept-Encoding: identity`; a 1 byte/s drip that outlived `--timeout`.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from model_export.__main__ import main
from model_export.fetch.download import DownloadError, download
from model_export.fetch.redact import Redactor, redact_url

FILE_PATH = "/weights/w-12345678.pth"
PASSWORD = "TopSecretPw"
MIB = 1 << 20


@dataclass
class Hostile:
    """What the server does with each GET, and what it saw."""

    mode: str = "file"  # file | busy | claim_huge | endless | gzip | drip
    body: bytes = b"x" * 300_000
    sent: int = 0  # body bytes written, all connections together
    seen: list[dict[str, str | None]] = field(default_factory=list)
    drip_s: float = 10.0  # how long a drip lasts (then the server gives up: later requests get 404)

    def request_log(self) -> list[str | None]:
        return [r["range"] for r in self.seen]


def make_handler(hostile: Hostile) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def write(self, data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()
            hostile.sent += len(data)

        def headers_out(self, status: int, **headers: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()

        def do_GET(self) -> None:  # one branch per attack, read top to bottom
            hostile.seen.append({"path": self.path, "range": self.headers.get("Range"),
                                 "auth": self.headers.get("Authorization"),
                                 "accept_encoding": self.headers.get("Accept-Encoding")})
            first = len(hostile.seen) == 1
            try:
                if hostile.mode == "busy" and first:
                    self.headers_out(503, Content_Length="0")
                elif hostile.mode in ("busy", "drip") and not first:
                    self.headers_out(404, Content_Length="0")
                elif hostile.mode == "claim_huge":  # claims 2 GiB, sends 8 MiB per connection
                    self.headers_out(200, Content_Length=str(2**31), Connection="close")
                    for _ in range(8):
                        self.write(b"\0" * MIB)
                elif hostile.mode == "endless":  # no length at all, bytes until the client hangs up (or 16 MiB)
                    self.headers_out(200, Connection="close")
                    for _ in range(16):
                        self.write(b"\0" * MIB)
                elif hostile.mode == "gzip":  # 30 MB of zeros in 30 KB, sent whatever the client asked for
                    packed = gzip.compress(b"\0" * 30_000_000)
                    self.headers_out(200, Content_Length=str(len(packed)), Content_Encoding="gzip")
                    self.write(packed)
                elif hostile.mode == "drip":  # one byte every 0.25 s of a 1000-byte body
                    self.headers_out(200, Content_Length="1000")
                    ends = time.monotonic() + hostile.drip_s
                    while time.monotonic() < ends:
                        self.write(b"x")
                        time.sleep(0.25)
                else:
                    start = int((self.headers.get("Range") or "bytes=0-")[6:-1] or 0)
                    status = 206 if start else 200
                    extra = {"Content_Range": f"bytes {start}-{len(hostile.body) - 1}/{len(hostile.body)}"} \
                        if start else {}
                    self.headers_out(status, Content_Length=str(len(hostile.body) - start), **extra)
                    self.write(hostile.body[start:])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up, as it should have

    return Handler


@pytest.fixture
def hostile() -> Iterator[tuple[str, Hostile]]:
    state = Hostile()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


def fetch_cli(url: str, tmp_path: Path, *extra: str) -> int:
    return main(["fetch", url, "--sha256", "12345678", "--arch", "tiny", "--cache-dir", str(tmp_path / "cache"),
                 "--output", str(tmp_path / "m.onnx"), "--no-progress", *extra])


def partials(tmp_path: Path) -> list[Path]:
    return list(tmp_path.rglob("*.partial"))


# ---- 5: credentials ---------------------------------------------------------------------------------------------

def test_a_mirror_password_is_used_but_never_printed(hostile: tuple[str, Hostile], tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    host, state = hostile
    state.mode = "busy"  # 503 (a WARNING and a retry), then 404 (the final error)
    caplog.set_level(logging.INFO)
    code = fetch_cli(f"https://example.org{FILE_PATH}", tmp_path, "--mirror", f"http://alice:{PASSWORD}@{host}")
    printed = caplog.text + capsys.readouterr().err
    assert code == 1 and "downloading http://***@" in printed and "retrying" in printed
    assert "fetch failed" in printed and "HTTP 404" in printed
    assert PASSWORD not in printed and "alice" not in printed
    assert [r["auth"] for r in state.seen] == ["Basic YWxpY2U6VG9wU2VjcmV0UHc="] * 2  # still sent to the mirror


def test_a_signed_query_is_redacted_in_every_line(hostile: tuple[str, Hostile], tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    host, state = hostile
    state.mode = "busy"
    caplog.set_level(logging.INFO)
    url = f"http://{host}{FILE_PATH}?X-Amz-Signature=SIGSECRET0123&token=tok%2Fsecret&v=2"
    assert fetch_cli(url, tmp_path) == 1
    printed = caplog.text + capsys.readouterr().err
    assert "X-Amz-Signature=***" in printed and "v=2" in printed and "fetch failed" in printed
    assert "SIGSECRET0123" not in printed and "tok%2Fsecret" not in printed and "tok/secret" not in printed


def test_a_mistyped_mirror_is_not_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch_cli(f"https://example.org{FILE_PATH}", tmp_path, "--mirror", f"alice:{PASSWORD}@mirror/x") == 1
    err = capsys.readouterr().err
    assert "must be an http(s) base URL" in err and PASSWORD not in err


def test_redaction_of_urls_and_of_text_that_quotes_them() -> None:
    assert redact_url(f"https://alice:{PASSWORD}@h:8/p?sig=abc&x=1") == "https://***@h:8/p?sig=***&x=1"
    assert redact_url("https://h/p.pth") == "https://h/p.pth"
    scrub = Redactor([f"https://alice:{PASSWORD}@h/p?access_token=a%2Bb", None])
    assert scrub(f"Max retries exceeded with url: /p?access_token=a%2Bb ({PASSWORD}, a+b)") == \
        "Max retries exceeded with url: /p?access_token=*** (***, ***)"


# ---- 6: size limit ------------------------------------------------------------------------------------------------

def test_an_announced_size_over_the_limit_is_refused_before_a_byte_is_written(
        hostile: tuple[str, Hostile], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Content-Length: 2**31 against the default 1 GiB limit: one request, nothing written, nothing to resume."""
    host, state = hostile
    state.mode = "claim_huge"
    assert fetch_cli(f"http://{host}{FILE_PATH}", tmp_path) == 1
    failures = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fetch failed")]
    assert len(failures) == 1 and "2147483648 bytes, over the size limit of 1073741824" in failures[0]
    assert len(state.seen) == 1 and partials(tmp_path) == []
    assert state.sent < 8 * MIB  # it hung up instead of reading what the server pushed


def test_an_endless_body_stops_at_the_limit_and_leaves_nothing(hostile: tuple[str, Hostile], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    host, state = hostile
    state.mode = "endless"
    monkeypatch.setenv("POSE_FETCH_MAX_BYTES", "2MiB")
    assert fetch_cli(f"http://{host}{FILE_PATH}", tmp_path) == 1
    err = capsys.readouterr().err
    assert "larger than the size limit of 2097152 bytes; nothing kept" in err
    assert len(state.seen) == 1 and partials(tmp_path) == []  # not resumed by this call nor left for the next


def test_an_oversize_partial_is_discarded_not_resumed(hostile: tuple[str, Hostile], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    host, state = hostile
    monkeypatch.setenv("POSE_FETCH_MAX_BYTES", "500000")
    partial = tmp_path / "cache" / "checkpoints" / "w-12345678.pth.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\1" * 600_000)  # what a claim_huge server left behind in an earlier call
    fetch_cli(f"http://{host}{FILE_PATH}", tmp_path)  # the hash fails (the body is not a checkpoint): fine
    assert state.request_log() == [None]  # asked from byte 0, not from 600000


def test_a_size_flag_overrides_the_environment(hostile: tuple[str, Hostile], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    host, _ = hostile
    monkeypatch.setenv("POSE_FETCH_MAX_BYTES", "1GiB")
    assert fetch_cli(f"http://{host}{FILE_PATH}", tmp_path, "--max-size", "100KB") == 1
    assert "over the size limit of 100000 bytes" in capsys.readouterr().err and partials(tmp_path) == []
    with pytest.raises(SystemExit):
        fetch_cli(f"http://{host}{FILE_PATH}", tmp_path, "--max-size", "lots")


# ---- 6: compression ---------------------------------------------------------------------------------------------

def test_a_gzip_body_that_was_not_asked_for_is_refused_undecoded(hostile: tuple[str, Hostile],
                                                                 tmp_path: Path) -> None:
    host, state = hostile
    state.mode = "gzip"
    partial = tmp_path / "x.partial"
    with pytest.raises(DownloadError, match="Content-Encoding 'gzip'"):
        download(f"http://{host}{FILE_PATH}", partial)
    assert state.seen[0]["accept_encoding"] == "identity"
    assert not partial.exists() or partial.stat().st_size == 0  # never the 30 MB it inflates to


# ---- 6: total deadline ------------------------------------------------------------------------------------------

def test_a_drip_ends_at_the_deadline_with_one_line(hostile: tuple[str, Hostile], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """4 bytes/s with --timeout 2: every read succeeds in time, so only a total deadline can end it."""
    host, state = hostile
    state.mode = "drip"
    monkeypatch.setenv("POSE_FETCH_DEADLINE_S", "2")
    started = time.monotonic()
    assert fetch_cli(f"http://{host}{FILE_PATH}", tmp_path, "--timeout", "2") == 1
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    failures = [line for line in err.splitlines() if line.startswith("fetch failed")]
    assert 1.9 <= elapsed < 3.5, elapsed
    assert len(failures) == 1 and "did not finish within its deadline of 2 s" in failures[0]
    assert "Traceback" not in err and len(state.seen) == 1


def test_a_redirect_loop_ends_in_one_line_without_credentials(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A mirror that redirects to itself forever: requests gives up (TooManyRedirects), and so does fetch, in one
    line that does not quote the mirror's password."""

    class Loop(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", self.path + "x")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Loop)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        mirror = f"http://alice:{PASSWORD}@127.0.0.1:{httpd.server_address[1]}/m"
        code = fetch_cli(f"https://example.org{FILE_PATH}", tmp_path, "--mirror", mirror)
    finally:
        httpd.shutdown()
        httpd.server_close()
    err = capsys.readouterr().err
    failures = [line for line in err.splitlines() if line.startswith("fetch failed")]
    assert code == 1 and len(failures) == 1 and "TooManyRedirects" in failures[0] and "Traceback" not in err
    assert PASSWORD not in err
