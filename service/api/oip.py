"""The Open Inference Protocol v2 REST front door (KServe v2 / Triton), on the same app, pipeline, limits, keys
and metrics as /v1. The protocol itself is service/oip/; errors answer in its form (service/oip/errors.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from posecore.errors import PoseError
from service.api.deps import ready_service, request_defaults, service_state
from service.api.openapi import error_responses
from service.api.pose import cancel_on_disconnect
from service.json_limits import json_value_limit
from service.memory import HANDLED_BYTES
from service.oip import contract
from service.oip.encoding import inflate
from service.oip.schemas import (
    INFER_REQUEST_SCHEMA,
    InferResponseBody,
    Live,
    ModelConfig,
    ModelMetadata,
    ModelReady,
    ProtocolError,
    Ready,
    ServerMetadata,
)
from service.oip.tensors import (
    InferRequest,
    InferResponse,
    check_requested_outputs,
    encode_response,
    header_length,
    parse_infer_request,
    select_outputs,
)
from service.request import PoseRequest, RequestDefaults
from service.serving import PoseResult, PoseService
from service.state import ServiceState

router = APIRouter(tags=["open inference protocol v2"])

SERVER_NAME = "hrnet-pose"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "parameters"]
HEADER_LENGTH = "Inference-Header-Content-Length"

_ERROR_TEXTS = {400: "Malformed request, tensor or image", 401: "Missing or wrong API key",
                404: "No such model, version or route", 413: "Body or image too large",
                415: "Unsupported image type", 422: "Invalid boxes, too many boxes or images",
                429: "Overloaded: retry after Retry-After seconds",
                500: "Our fault: inference failed or an internal error",
                503: "Not ready or shutting down: retry after Retry-After seconds",
                504: "Deadline exceeded: retry after Retry-After seconds"}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(ProtocolError, {s: _ERROR_TEXTS[s] for s in statuses})


PROBE_ERRORS = _errors(401, 503)
MODEL_ERRORS = _errors(401, 404, 422, 503)  # 422: FastAPI documents one wherever a route has parameters
INFER_ERRORS = _errors(400, 401, 404, 413, 415, 422, 429, 500, 503, 504)
INFER_BODY = {
    "parameters": [{"name": HEADER_LENGTH, "in": "header", "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Binary tensor data extension: the JSON header's length in bytes; the inputs' "
                    "binary data (parameters.binary_data_size each, in input order) follows it."}],
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": INFER_REQUEST_SCHEMA},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }},
}
INFER_OK: dict[int | str, dict[str, Any]] = {200: {
    "model": InferResponseBody,
    "description": "Outputs as JSON data, or (binary_data_output / binary_data) the JSON header then the outputs' "
    "bytes, its length in Inference-Header-Content-Length",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


# -- server --------------------------------------------------------------------------------------------------
@router.get("/v2", response_model=ServerMetadata, responses=_errors(401), summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=request.app.version, extensions=EXTENSIONS)


@router.get("/v2/health/live", response_model=Live, responses=_errors(401), summary="Liveness")
async def live() -> Live:
    return Live(live=True)


@router.get("/v2/health/ready", response_model=Ready, responses=PROBE_ERRORS,
            summary="Readiness: model loaded, warmed up, configured provider active, not draining")
async def ready(request: Request) -> Ready:
    ready_service(request)  # 503 not_ready / shutting_down otherwise
    return Ready(ready=True)


# -- the model -----------------------------------------------------------------------------------------------
def served_model(request: Request, model_name: str, model_version: str | None = None) -> ServiceState:
    """The state, once `model_name` (and `model_version`, when given) is what this service serves; else 404."""
    state = service_state(request)
    if state.model is None:
        raise PoseError("not_ready", "the model is not loaded yet")
    served = state.model.card.name
    if model_name != served:
        raise PoseError("not_found", f"model {model_name[:100]!r} is not served here; this service serves {served!r}")
    if model_version is not None and model_version != contract.MODEL_VERSION:
        raise PoseError("not_found", f"model {served!r} has no version {model_version[:20]!r}; its only version "
                        f"is {contract.MODEL_VERSION}")
    return state


def _num_keypoints(state: ServiceState) -> int:
    assert state.model is not None  # served_model checked
    return len(state.model.card.keypoints)


@router.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=MODEL_ERRORS,
            summary="Model metadata: inputs and outputs")
async def model_metadata(request: Request, model_name: str) -> dict[str, Any]:
    state = served_model(request, model_name)
    return contract.model_metadata(model_name, _num_keypoints(state))


@router.get("/v2/models/{model_name}/versions/{model_version}", response_model=ModelMetadata,
            responses=MODEL_ERRORS, summary="Model metadata of one version")
async def version_metadata(request: Request, model_name: str, model_version: str) -> dict[str, Any]:
    served_model(request, model_name, model_version)
    return await model_metadata(request, model_name)


@router.get("/v2/models/{model_name}/ready", response_model=ModelReady, responses=MODEL_ERRORS,
            summary="Model readiness")
async def model_ready(request: Request, model_name: str) -> ModelReady:
    served_model(request, model_name)
    ready_service(request)  # 503 not_ready / shutting_down otherwise
    return ModelReady(name=model_name, ready=True)


@router.get("/v2/models/{model_name}/versions/{model_version}/ready", response_model=ModelReady,
            responses=MODEL_ERRORS, summary="Model readiness of one version")
async def version_ready(request: Request, model_name: str, model_version: str) -> ModelReady:
    served_model(request, model_name, model_version)
    return await model_ready(request, model_name)


@router.get("/v2/models/{model_name}/config", response_model=ModelConfig, responses=MODEL_ERRORS,
            response_model_exclude_none=True,
            summary="Triton model configuration (minimal form, for perf_analyzer)")
async def model_config(request: Request, model_name: str) -> dict[str, Any]:
    state = served_model(request, model_name)
    return contract.model_config(model_name, _num_keypoints(state))


@router.get("/v2/models/{model_name}/versions/{model_version}/config", response_model=ModelConfig,
            response_model_exclude_none=True,
            responses=MODEL_ERRORS, summary="Triton model configuration of one version")
async def version_config(request: Request, model_name: str, model_version: str) -> dict[str, Any]:
    served_model(request, model_name, model_version)
    return await model_config(request, model_name)


# -- infer ---------------------------------------------------------------------------------------------------
@router.post("/v2/models/{model_name}/infer", response_class=Response, responses={**INFER_OK, **INFER_ERRORS},
             openapi_extra=INFER_BODY, summary="Keypoints of the people in B images (encoded files as BYTES)")
async def infer(request: Request, model_name: str, defaults: RequestDefaults = Depends(request_defaults),
                poser: PoseService = Depends(ready_service)) -> Response:
    return await _infer(request, served_model(request, model_name), model_name, defaults, poser)


@router.post("/v2/models/{model_name}/versions/{model_version}/infer", response_class=Response,
             responses={**INFER_OK, **INFER_ERRORS}, openapi_extra=INFER_BODY, summary="Infer with one version")
async def version_infer(request: Request, model_name: str, model_version: str,
                        defaults: RequestDefaults = Depends(request_defaults),
                        poser: PoseService = Depends(ready_service)) -> Response:
    return await _infer(request, served_model(request, model_name, model_version), model_name, defaults, poser)


async def _infer(request: Request, state: ServiceState, model_name: str, defaults: RequestDefaults,
                 poser: PoseService) -> Response:
    settings = state.settings
    body = await request.body()
    encoding, json_length = request.headers.get("content-encoding"), request.headers.get(HEADER_LENGTH)
    output_names = contract.output_names(_num_keypoints(state))

    def read() -> tuple[InferRequest, list[PoseRequest]]:
        """Everything about the call that can be refused without an image decoded: inflating, the JSON's
        structure, the tensors (an input's shape before its data), the requested outputs, the parameters."""
        inflated = inflate(body, encoding, settings.max_body_bytes)
        request.scope["state"][HANDLED_BYTES] = len(inflated)  # trimmed after the answer (service/memory.py)
        parsed = parse_infer_request(inflated, header_length(json_length, len(inflated)),
                                     json_value_limit(settings.max_batch_items, settings.max_boxes),
                                     contract.input_check(settings.max_batch_items, settings.max_boxes))
        check_requested_outputs(parsed, output_names)
        return parsed, contract.pose_requests(parsed, defaults, settings.max_batch_items)

    parsed, items = await asyncio.to_thread(read)  # CPU-bound on a hostile body: never on the event loop

    def name_error(error: PoseError, index: int) -> PoseError:  # a v2 call succeeds or fails as a whole
        return contract.for_image(error, index, len(items))

    outcomes = await cancel_on_disconnect(request, poser.estimate_many(items, name_error=name_error))
    results = [outcome for outcome in outcomes if isinstance(outcome, PoseResult)]
    assert len(results) == len(outcomes)  # estimate_many raised the first error
    outputs, binary = select_outputs(parsed, contract.pose_outputs(results, _num_keypoints(state)))
    parameters = {"decode": results[0].decode} if results else None  # one call, one decode parameter
    content, json_length_out = encode_response(InferResponse(model_name, contract.MODEL_VERSION, outputs,
                                                             parsed.id, binary, parameters))
    if json_length_out is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length_out)})
