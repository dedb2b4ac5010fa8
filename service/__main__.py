"""`python -m service --model PATH [--host H] [--port P]` (console script: pose-service).

Every setting is also an environment variable POSE_<NAME>; command-line flags win."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service.settings import Settings


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from service.backend import ModelLoadError
    from service.logs import configure_logging
    from service.main import create_app, load_model

    args = parse_args(argv)
    overrides = {k: v for k, v in {"model_path": args.model, "host": args.host, "port": args.port,
                                   "provider": args.provider}.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    try:  # load before the server starts, so a bad path is one clear line, not a traceback
        model = load_model(settings)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, model=model)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
