"""create_app(settings): the FastAPI app. Its lifespan loads the model and its card, warms every batch shape
up, starts the micro-batcher and only then reports ready; on shutdown it turns unready and drains."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from posecore.backend import OrtBackend
from posecore.codec import PoseCodec
from posecore.detection import PersonDetector
from posecore.errors import RETRY_AFTER_CODES, ModelLoadError, PoseError
from posecore.modelcard import read_card
from service.admission import PixelBudget
from service.api import register_routes
from service.batching import MicroBatcher
from service.metrics import Metrics
from service.middleware import AccessControlMiddleware, RequestContextMiddleware
from service.refusals import refusal_answer
from service.serving import DetectorStage, Limits, PoseService
from service.settings import Settings
from service.state import LoadedModel, ServiceState

log = logging.getLogger(__name__)

EXPORT_HINT = "create it with: python -m model_export export --arch w32_256x192 --random-init --output {path}"


def load_model(settings: Settings) -> LoadedModel:
    """Open the ONNX file and its card. Raises ModelLoadError with a one-line message naming the path."""
    path = settings.model_path
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}; " + EXPORT_HINT.format(path=path))
    try:
        backend = OrtBackend(path, provider=settings.provider, intra_op_threads=settings.intra_op_threads,
                             max_batch=settings.max_batch_size, trt_cache_dir=settings.trt_cache_dir,
                             trt_fp16=settings.trt_fp16, spin=settings.ort_spin)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc}; " + EXPORT_HINT.format(path=path)) from None
    card, found = read_card(path, backend)
    return LoadedModel(backend, card, found, backend.status)


def load_detector(settings: Settings) -> PersonDetector | None:
    """The person detector of POSE_DETECTOR_PATH, or None. Raises DetectorLoadError naming the file."""
    if settings.detector_path is None:
        return None
    return PersonDetector(settings.detector_path, score_threshold=settings.detector_score_threshold,
                          max_boxes=settings.max_boxes, provider=settings.provider,
                          intra_op_threads=settings.intra_op_threads, max_batch=settings.max_batch_size,
                          trt_cache_dir=settings.trt_cache_dir, trt_fp16=settings.trt_fp16, spin=settings.ort_spin)


def create_app(settings: Settings | None = None, model: LoadedModel | None = None,
               detector: PersonDetector | None = None) -> FastAPI:
    """`model` and `detector` may be preloaded (the CLI does, to fail fast with a clean message) or injected by
    tests; otherwise the lifespan loads them from the settings."""
    settings = settings or Settings()
    metrics = Metrics()
    state = ServiceState(settings=settings, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = model if model is not None else await asyncio.to_thread(load_model, settings)
        found = detector if detector is not None else await asyncio.to_thread(load_detector, settings)
        await start_serving(state, loaded, found)
        try:
            yield
        finally:
            await stop_serving(state)

    app = FastAPI(
        title="HRNet pose service",
        version="0.1.0",
        description="POST an image (and person boxes), get 17 COCO keypoints per person. "
        "Check `model.trained` in every response: a random-init export returns meaningless keypoints.",
        lifespan=lifespan,
        # no 307 from /v2/ to /v2: Starlette would build its Location from the client's Host header
        redirect_slashes=False,
    )
    app.state.service = state
    install_error_handlers(app, metrics)
    register_routes(app)
    # add_middleware puts each one outside the ones before it: the stack is RequestContext > CORS > access control
    app.add_middleware(AccessControlMiddleware, metrics=metrics, api_keys=read_api_keys(settings),
                       auth_probes=settings.auth_probes, max_body_bytes=settings.max_body_bytes)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=["X-Request-ID", "Server-Timing", "Retry-After"])
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app


async def start_serving(state: ServiceState, loaded: LoadedModel, detector: PersonDetector | None = None) -> None:
    settings, metrics = state.settings, state.metrics
    state.model = loaded
    backend = loaded.backend
    metrics.set_model(loaded.card.name, loaded.card.arch, loaded.card.trained, backend.provider)
    if not loaded.card.trained:
        log.warning("serving an UNTRAINED model (%s): %s", loaded.card.name, loaded.card.warning or
                    "its keypoints are meaningless")
    await asyncio.to_thread(backend.warmup)
    state.batcher = MicroBatcher(
        infer=backend.infer, max_batch_size=min(settings.max_batch_size, backend.max_batch_size),
        max_wait_s=settings.max_wait_ms / 1000, max_queue_items=settings.queue_crops(detector is not None),
        metrics=metrics,
        name="pose-batcher", unit="crops",
    )
    state.batcher.start()
    detection = None
    if detector is not None:  # ready only once the detector is warm too
        await asyncio.to_thread(detector.warmup)
        # its own queue of whole images; batched where its batch axis allows (the official export: 1 image)
        detection = DetectorStage(detector, MicroBatcher(
            infer=detector.infer, max_batch_size=detector.max_batch_size, max_wait_s=settings.max_wait_ms / 1000,
            max_queue_items=settings.queue_crops(False), name="detector-batcher", unit="images"))
        detection.batcher.start()
        state.detection = detection
        log.info("person detector %s (%s, input %s, score threshold %.2f) on %s", detector.model_path.name,
                 detector.layout, list(detector.input_hw), detector.score_threshold, detector.provider)
    state.poser = PoseService(
        codec=PoseCodec(loaded.card), batcher=state.batcher, metrics=metrics,
        limits=Limits(settings.max_image_bytes, settings.max_image_pixels),
        pixels=PixelBudget(settings.max_inflight_pixels), request_timeout_s=settings.request_timeout_s,
        detection=detection,
    )
    status = loaded.provider_status
    state.draining = False  # the same app may be started again after a shutdown (test clients do that)
    if status.ok or settings.allow_cpu_fallback:
        state.ready = True
        state.not_ready_reason = ""
    else:
        state.not_ready_reason = (f"execution provider: {status.reason}; "
                                  "set POSE_ALLOW_CPU_FALLBACK=true to serve anyway")
    metrics.ready.set(1 if state.ready else 0)
    log.info("model %s ready=%s provider=%s", loaded.card.name, state.ready, backend.provider)


async def stop_serving(state: ServiceState) -> None:
    state.begin_drain()
    if state.detection is not None:
        await asyncio.to_thread(state.detection.batcher.close)
    if state.batcher is not None:
        await asyncio.to_thread(state.batcher.close)
    if state.poser is not None:
        state.poser.close()


def read_api_keys(settings: Settings) -> list[str]:
    keys = [k.strip() for k in settings.api_keys.split(",") if k.strip()]
    if settings.api_keys_file is not None:
        keys += [line.strip() for line in settings.api_keys_file.read_text().splitlines() if line.strip()]
    return keys


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def respond(request: Request, error: PoseError) -> Response:
        request_id = getattr(request.state, "request_id", "-")
        status, headers, body = refusal_answer(metrics, request.url.path, error, request_id)
        return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})

    @app.exception_handler(PoseError)
    async def pose_error(request: Request, exc: PoseError) -> Response:
        if exc.status >= 500 and exc.code not in RETRY_AFTER_CODES:  # load shedding and draining are no faults
            log.error("request failed: %s: %s", exc.code, exc.message)
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return respond(request, PoseError("invalid_request", f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "invalid_request")
        return respond(request, PoseError(code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return respond(request, PoseError("internal_error", "internal error; see the service log with this request_id"))
