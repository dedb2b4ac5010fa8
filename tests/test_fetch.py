"""`python -m model_export fetch`: registry, cache, resumable verified downloads, offline paths, export + card.

Never touches the internet: an HTTP server in a thread on 127.0.0.1 serves a tiny HRNet checkpoint in the
mmpose layouts, honours Range and can cut its first transfers short.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from model_export.__main__ import main
from model_export.checkpoint import load_checkpoint
from model_export.configs import get_config
from model_export.fetch import fetcher
from model_export.fetch.download import DownloadError, Timeouts, Unreachable, download
from model_export.fetch.fetcher import FetchError, fetch_checkpoint, resolve_request
from model_export.fetch.registry import (
    RegistryEntry,
)
from model_export.hrnet import HRNet, build_hrnet
from posecore.codecs.spec import CodecSpec
from posecore.modelcard import ModelCard, card_path_for
from tests.helpers import REFERENCE

FILE = "tiny_hrnet_coco_256x192-{prefix}_20260101.pth"


# ---- a tiny checkpoint in the mmpose layouts, and a server for it ----

def tiny_state_dict() -> dict[str, torch.Tensor]:
    """The reference tiny model when ../shared is there (a known network), else the official random init."""
    reference = REFERENCE / "tiny_hrnet_state_dict.pt"
    if reference.is_file():
        return torch.load(reference, weights_only=True)
    return build_hrnet(get_config("tiny"), seed=3).state_dict()


def mmpose_checkpoint(state_dict: dict[str, torch.Tensor], head: str) -> bytes:
    """{'meta', 'state_dict'} with `backbone.*` and `<head>.final_layer.*` keys, as mmpose publishes."""
    wrapped = {(k if k.startswith("final_layer.") else f"backbone.{k}"): v for k, v in state_dict.items()}
    wrapped = {(f"{head}.{k}" if k.startswith("final_layer.") else k): v for k, v in wrapped.items()}
    buffer = io.BytesIO()
    torch.save({"meta": {"epoch": 210, "mmpose_version": "test"}, "state_dict": wrapped}, buffer)
    return buffer.getvalue()


@dataclass
class Served:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None  # send only this many bytes of a body ...
    cuts_left: int = 0  # ... this many times, then whole bodies
    honour_range: bool = True
    busy_answers: int = 0  # answer this many requests with 503 first
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


def make_handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            served.requests.append((self.path, self.headers.get("Range")))
            if served.busy_answers > 0:
                served.busy_answers -= 1
                self.send_error(503, "Service Unavailable")
                return
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and served.honour_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            chunk = body[start:]
            if served.cuts_left > 0 and served.cut_after is not None:
                served.cuts_left -= 1
                chunk = chunk[:served.cut_after]
            self.wfile.write(chunk)
            self.wfile.flush()

    return Handler


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, bytes]:
    state_dict = tiny_state_dict()
    return {"1.x": mmpose_checkpoint(state_dict, "head"), "0.x": mmpose_checkpoint(state_dict, "keypoint_head")}


@pytest.fixture
def server(checkpoints: dict[str, bytes]) -> Iterator[tuple[str, Served]]:
    """(base URL, Served) of a fresh HTTP server; serves the 1.x-layout checkpoint under its hashed file name."""
    body = checkpoints["1.x"]
    served = Served(files={f"/weights/{FILE.format(prefix=sha256(body)[:8])}": body})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener completes the TCP handshake (the kernel's backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def url_of(base: str, served: Served) -> str:
    return base + next(iter(served.files))


def url_request(url: str, digest: str) -> fetcher.WeightsRequest:
    return resolve_request(url, sha256=digest, arch="tiny")


# ---- downloading ----

def test_a_cut_transfer_is_resumed_in_the_same_call(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    body = next(iter(served.files.values()))
    served.cut_after, served.cuts_left = len(body) // 3, 2
    fetched = fetch_checkpoint(url_request(url_of(base, served), sha256(body)), cache_dir=tmp_path)
    assert fetched.path.read_bytes() == body and fetched.sha256 == sha256(body) and fetched.how == "download"
    ranges = [r for _, r in served.requests]
    assert len(ranges) == 3 and ranges[0] is None
    first, second = (int(r.removeprefix("bytes=").removesuffix("-")) for r in ranges[1:] if r)
    cut = len(body) // 3
    assert 0 < first <= cut and first < second <= first + cut  # resumed where each cut transfer stopped
    assert not list(tmp_path.rglob("*.partial"))


def test_a_cut_transfer_is_resumed_by_the_next_call(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    body = next(iter(served.files.values()))
    served.cut_after, served.cuts_left = 300_000, 1
    url = url_of(base, served)
    partial = tmp_path / "x.partial"
    with pytest.raises(DownloadError, match=r"kept in .*the next call resumes"):
        download(url, partial, max_attempts=1)
    kept = partial.stat().st_size
    assert 0 < kept <= 300_000 and partial.read_bytes() == body[:kept]
    download(url, partial)
    assert partial.read_bytes() == body and served.requests[-1][1] == f"bytes={kept}-"


def test_a_server_that_ignores_range_restarts_the_file(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    body = next(iter(served.files.values()))
    served.honour_range = False
    partial = tmp_path / "x.partial"
    partial.write_bytes(b"stale bytes of another file")
    download(url_of(base, served), partial)
    assert partial.read_bytes() == body


def test_busy_answers_are_retried_with_backoff(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    body = next(iter(served.files.values()))
    served.busy_answers = 2
    waits: list[float] = []
    download(url_of(base, served), tmp_path / "x.partial", sleep=waits.append)
    assert (tmp_path / "x.partial").read_bytes() == body and waits == [1.0, 2.0] and len(served.requests) == 3


def test_wrong_hash_deletes_the_file_and_names_both_hashes(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    body = next(iter(served.files.values()))
    wrong = "0" * 64
    with pytest.raises(FetchError) as error:
        fetch_checkpoint(url_request(url_of(base, served), wrong), cache_dir=tmp_path)
    assert wrong in str(error.value) and sha256(body) in str(error.value) and "deleted" in str(error.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


def test_404_fails_with_the_url_the_cache_path_and_from_file(server: tuple[str, Served], tmp_path: Path) -> None:
    base, _ = server
    url = f"{base}/weights/missing-12345678.pth"
    with pytest.raises(FetchError) as error:
        fetch_checkpoint(url_request(url, "12345678"), cache_dir=tmp_path)
    message = str(error.value)
    assert "HTTP 404" in message and url in message and "--from-file" in message
    assert str(tmp_path / "checkpoints" / "missing-12345678.pth") in message


def test_a_server_that_never_answers_times_out_in_seconds(silent_port: int, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(Unreachable, match="did not answer within 1 s"):
        download(f"http://127.0.0.1:{silent_port}/x.pth", tmp_path / "x.partial", timeouts=Timeouts(1.0, 1.0))
    assert time.monotonic() - started < 10


def test_a_closed_port_fails_fast_with_one_message(closed_port: int, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port}/weights/w-12345678.pth"
    started = time.monotonic()
    code = main(["fetch", url, "--sha256", "12345678", "--arch", "tiny", "--cache-dir", str(tmp_path),
                 "--output", str(tmp_path / "m.onnx")])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    failures = [line for line in err.splitlines() if line.startswith("fetch failed")]
    assert code == 1 and elapsed < 10 and len(failures) == 1 and "Traceback" not in err
    assert url in failures[0] and "Connection refused" in failures[0] and "--from-file" in failures[0]
    assert str(tmp_path / "checkpoints" / "w-12345678.pth") in failures[0]
    assert not (tmp_path / "m.onnx").exists()


def test_from_file_verifies_and_fills_the_cache_without_a_server(closed_port: int, tmp_path: Path,
                                                                 checkpoints: dict[str, bytes]) -> None:
    body = checkpoints["1.x"]
    local = tmp_path / "downloaded-elsewhere.pth"
    local.write_bytes(body)
    request = url_request(f"http://127.0.0.1:{closed_port}/w/{FILE.format(prefix=sha256(body)[:8])}", sha256(body))
    fetched = fetch_checkpoint(request, cache_dir=tmp_path / "cache", from_file=local)
    assert fetched.how == "file" and fetched.path.read_bytes() == body
    assert fetched.path.parent.parent == tmp_path / "cache"
    again = fetch_checkpoint(request, cache_dir=tmp_path / "cache")  # later calls find it, still no server
    assert again.how == "cache" and again.sha256 == sha256(body)


def test_from_file_with_the_wrong_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    local = tmp_path / "other.pth"
    local.write_bytes(b"not a checkpoint")
    with pytest.raises(FetchError, match=r"expected sha256 12345678.*got"):
        fetch_checkpoint(url_request("https://example.org/w-12345678.pth", "12345678"), cache_dir=tmp_path / "c",
                         from_file=local)
    assert local.exists() and not (tmp_path / "c" / "checkpoints" / "w-12345678.pth").exists()


def test_a_corrupt_cached_file_is_fetched_again(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    body = next(iter(served.files.values()))
    request = url_request(url_of(base, served), sha256(body))
    cached = tmp_path / "checkpoints" / request.file_name
    cached.parent.mkdir(parents=True)
    middle = len(body) // 2
    cached.write_bytes(body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:])  # one rotten byte
    fetched = fetch_checkpoint(request, cache_dir=tmp_path)
    assert fetched.how == "download" and cached.read_bytes() == body


def test_mirror_serves_the_same_path(server: tuple[str, Served], closed_port: int, tmp_path: Path) -> None:
    base, served = server
    body = next(iter(served.files.values()))
    original = f"http://127.0.0.1:{closed_port}{next(iter(served.files))}"
    fetched = fetch_checkpoint(url_request(original, sha256(body)), cache_dir=tmp_path, mirror=base)
    assert fetched.path.read_bytes() == body and served.requests[0][0] == next(iter(served.files))


# ---- both mmpose layouts, and the whole command ----

@pytest.mark.parametrize("layout", ["1.x", "0.x"])
def test_both_mmpose_layouts_load_strictly(layout: str, checkpoints: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "c.pth"
    path.write_bytes(checkpoints[layout])
    model = HRNet(get_config("tiny"))
    report = load_checkpoint(model, path)
    assert report.layout == "mmpose" and report.unwrapped == ["state_dict"]
    assert torch.equal(model.final_layer.weight, tiny_state_dict()["final_layer.weight"])


def assert_onnx_equals_torch(onnx_path: Path, checkpoint: bytes) -> None:
    """The exported ONNX gives the torch output of the same checkpoint (the done-when of issue 12)."""
    model = HRNet(get_config("tiny"))
    load_checkpoint(model, torch.load(io.BytesIO(checkpoint), weights_only=True))
    x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-3 * float(np.abs(expected).max()))


def test_fetch_by_url_exports_an_onnx_equal_to_torch(server: tuple[str, Served], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    base, served = server
    body = next(iter(served.files.values()))
    served.cut_after, served.cuts_left = len(body) // 2, 1
    url, output = url_of(base, served), tmp_path / "models" / "tiny.onnx"
    argv = ["fetch", url, "--sha256", sha256(body)[:8], "--arch", "tiny", "--cache-dir", str(tmp_path / "cache"),
            "--output", str(output)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "%|" not in captured.err  # no progress bar when stderr is not a terminal
    assert f"sha256 {sha256(body)}" in captured.out
    assert_onnx_equals_torch(output, body)
    card = ModelCard.read(card_path_for(output))
    assert card.trained is True and card.warning is None and card.arch == "tiny"
    assert card.weights.url == url and card.weights.checkpoint_sha256 == sha256(body) and card.weights.ap is None
    check = card.export_check
    assert isinstance(check["max_abs_diff"], float) and isinstance(check["tolerance"], float)
    assert check["max_abs_diff"] <= check["tolerance"]


def test_fetch_by_name_records_the_registry_facts(server: tuple[str, Served], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry entry end to end (the registry's own files cannot be served here: they hash as published)."""
    base, served = server
    body = next(iter(served.files.values()))
    entry = RegistryEntry(name="tiny_coco_test", kind="pose", arch="tiny", url=url_of(base, served),
                          sha256_prefix=sha256(body)[:8], ap=0.123, publisher="test zoo",
                          codec={"type": "UDPHeatmap", "blur_kernel_size": 11})
    monkeypatch.setattr(fetcher, "find_entry", lambda name: entry)
    output = tmp_path / "tiny_coco_test.onnx"
    assert main(["fetch", "tiny_coco_test", "--cache-dir", str(tmp_path), "--output", str(output),
                 "--no-progress"]) == 0
    card = ModelCard.read(card_path_for(output))
    assert (card.trained, card.weights.registry_name, card.weights.ap) == (True, "tiny_coco_test", 0.123)
    assert card.codec == CodecSpec(type="UDPHeatmap")  # served as its AP was measured
    assert card.weights.url == entry.url and card.weights.checkpoint_sha256 == sha256(body)
    assert "test zoo" in card.weights.source
