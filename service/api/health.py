"""/livez (the process answers), /readyz (model loaded, warmed up, provider active, not draining), /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from posecore.contract import ErrorResponse
from posecore.errors import RETRY_AFTER_S, retry_after_header
from service.api.deps import service_state
from service.schemas import HealthResponse

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key (when POSE_AUTH_PROBES=true)"}
}

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=HealthResponse, responses=UNAUTHORIZED, summary="Liveness: the process is up")
async def livez() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=HealthResponse,
            responses={503: {"model": HealthResponse, "description": "Not ready (starting, or shutting down)"},
                       **UNAUTHORIZED},
            summary="Readiness: model loaded, warmed up, configured provider active")
async def readyz(request: Request):
    state = service_state(request)
    if state.ready:
        return HealthResponse(status="ready")
    body = HealthResponse(status="not_ready", detail=state.not_ready_reason)
    retry = retry_after_header(RETRY_AFTER_S["not_ready"])
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": retry})


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
                       **UNAUTHORIZED})
async def metrics(request: Request) -> Response:
    return Response(generate_latest(service_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
