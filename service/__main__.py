"""`python -m service --model PATH [--host H] [--port P]` (console script: pose-service).

Every setting is also an environment variable POSE_<NAME>; command-line flags win."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import uvicorn

from posecore.errors import ModelLoadError
from service.http_limits import HttpLimits, LimitedHttpToolsProtocol, limited_protocol
from service.logs import configure_logging
from service.main import create_app, load_detector, load_model
from service.memory import limit_arenas
from service.metrics import Metrics
from service.settings import Settings
from service.state import ServiceState

log = logging.getLogger("service")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve an HRNet ONNX model: POST /v1/pose with an image, get 17 COCO keypoints per person. "
        "Every setting is also an environment variable POSE_<NAME> (see README, 'Settings').",
    )
    parser.add_argument("--model", type=Path, help="ONNX file (env POSE_MODEL_PATH); its card is NAME.json beside it")
    parser.add_argument("--host", help="bind address (env POSE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="bind port (env POSE_PORT, default 8000)")
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda", "tensorrt"], help="execution provider")
    parser.add_argument("--detector", type=Path, help="person detector ONNX (env POSE_DETECTOR_PATH): requests "
                        "without boxes find the people first")
    return parser.parse_args(argv)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains before it stops (what Kubernetes expects):

    1. the signal only marks the exit as requested; the next tick (<= 0.1 s later) calls `begin_drain`, so
       /readyz answers 503 and new pose requests get 503 shutting_down with Retry-After, while the listener
       stays open;
    2. after `delay_s` (POSE_SHUTDOWN_DELAY_S, for load balancers to notice) uvicorn's own graceful shutdown
       runs: stop accepting, let in-flight requests finish (up to POSE_SHUTDOWN_TIMEOUT_S), then the lifespan
       shutdown (the batcher finishes every admitted crop), and the process exits 0;
    3. a second signal skips what is left of the delay; a SIGINT after that forces the exit.

    uvicorn re-raises a captured signal after a graceful stop, so the process would die of SIGTERM (status
    -15); a drained stop is a clean exit, so the signal is not recorded for re-raising.
    """

    def __init__(self, config: uvicorn.Config, state: ServiceState, delay_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.delay_s = delay_s
        self.exit_requested_at: float | None = None
        self.drain_started = False

    def handle_exit(self, sig: int, frame) -> None:  # runs as a signal handler: set flags only, take no locks
        if self.exit_requested_at is None:
            self.exit_requested_at = time.monotonic()
        elif self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.exit_requested_at is not None:
            if not self.drain_started:
                self.drain_started = True
                self.state.begin_drain()
                log.info("shutdown requested: unready now; serving %.1f s more, then draining in-flight requests",
                         self.delay_s)
            if time.monotonic() - self.exit_requested_at >= self.delay_s:
                self.should_exit = True
        return await super().on_tick(counter)


def http_protocol(settings: Settings, metrics: Metrics) -> type[LimitedHttpToolsProtocol]:
    """uvicorn's httptools protocol with our header size limit and header/body timeouts (service/http_limits.py);
    the requests it refuses before the app sees them are counted like the app's own."""

    def count(status: int, code: str) -> None:
        metrics.requests.labels(endpoint="unmatched", status=str(status)).inc()
        metrics.count_error(code)

    limits = HttpLimits(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s,
                        settings.body_min_bytes_per_s)
    return limited_protocol(limits, count)


def main(argv: list[str] | None = None) -> int:
    limit_arenas(dict(os.environ))  # first: before model loading and the server start threads that allocate
    args = parse_args(argv)
    overrides = {k: v for k, v in {"model_path": args.model, "host": args.host, "port": args.port,
                                   "provider": args.provider, "detector_path": args.detector}.items()
                 if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    try:  # load before the server starts, so a bad path is one clear line, not a traceback
        model = load_model(settings)
        detector = load_detector(settings)
    except ModelLoadError as exc:  # DetectorLoadError is one too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, model=model, detector=detector)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
                            http=http_protocol(settings, app.state.service.metrics),
                            timeout_keep_alive=settings.keep_alive_timeout_s)
    server = DrainingServer(config, app.state.service, settings.shutdown_delay_s)
    server.run()
    return 0 if server.started else 3  # 3: uvicorn's start-up failure status (e.g. the port is taken)


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
