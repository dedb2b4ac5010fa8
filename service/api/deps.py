"""Access to the service state from routes; 503 until the model is loaded and warmed up."""

from __future__ import annotations

from fastapi import Request

from posecore.errors import PoseError
from service.request import RequestDefaults
from service.serving import PoseService
from service.state import ServiceState


def service_state(request: Request) -> ServiceState:
    return request.app.state.service


def ready_service(request: Request) -> PoseService:
    state = service_state(request)
    if state.draining:
        raise PoseError("shutting_down", "the service is shutting down")
    if state.poser is None or not state.ready:
        raise PoseError("not_ready", f"not ready: {state.not_ready_reason}")
    return state.poser


def request_defaults(request: Request) -> RequestDefaults:
    settings = service_state(request).settings
    return RequestDefaults(flip=settings.flip_test, max_boxes=settings.max_boxes)
