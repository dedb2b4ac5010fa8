"""The real server as a subprocess on 127.0.0.1 (`python -m service --model ... --port ...`), for the tests that
need a real process: overload, graceful shutdown, JSON logs, the browser page and the soak.

Its stderr (the JSON log lines) is collected by a reader thread; `rss_bytes()` reads the process's resident set
from /proc. Traffic only ever goes to 127.0.0.1, and every server is stopped at the end of its `with` block.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import ROOT, free_port, rss_bytes


class LiveServer:
    """`with LiveServer(model, env={...}) as server:` starts the service and waits until /readyz is 200."""

    def __init__(self, model: Path, env: dict[str, str] | None = None, startup_timeout_s: float = 90.0,
                 wait_ready: bool = True) -> None:
        self.model = model
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "POSE_PROVIDER": "cpu", "POSE_INTRA_OP_THREADS": "1",
                    "POSE_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.startup_timeout_s = startup_timeout_s
        self.wait_ready = wait_ready
        self.process: subprocess.Popen[str] | None = None
        self.stderr_lines: list[str] = []
        self._reader: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> LiveServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--model", str(self.model), "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if self.wait_ready:
            try:
                self.wait_until_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    @property
    def running(self) -> subprocess.Popen[str]:
        assert self.process is not None, "the server was not started"
        return self.process

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.running.poll() is not None:
                raise RuntimeError(f"the server exited with {self.running.returncode} during start-up:\n"
                                   + "\n".join(self.stderr_lines[-30:]))
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the server was not ready within {self.startup_timeout_s} s:\n"
                           + "\n".join(self.stderr_lines[-30:]))

    def terminate(self) -> None:
        """SIGTERM, as Kubernetes sends it."""
        self.send_signal(signal.SIGTERM)

    def send_signal(self, sig: signal.Signals) -> None:
        self.running.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        return self.running.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.process.returncode

    # -- observation ----------------------------------------------------------------------------
    def rss_bytes(self) -> int:
        """Resident set size of the server process."""
        return rss_bytes(self.running.pid)

    def log_records(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as JSON (the service logs nothing else); raises on a non-JSON line."""
        records = []
        for line in list(self.stderr_lines):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise AssertionError(f"a log line is not JSON: {line!r}") from None
        return records
