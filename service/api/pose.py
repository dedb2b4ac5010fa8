"""POST /v1/pose (multipart or raw image body), /v1/pose/render and /v1/pose/batch.

Parsing is service/request.py's, the work is service/serving.py's; this file routes and serialises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from posecore.codec import PersonPose
from posecore.contract import BatchResponse, ErrorResponse, ModelInfo, PoseResponse
from posecore.errors import PoseError
from posecore.imaging import encode_image
from service.api.deps import ready_service, request_defaults, service_state
from service.api.openapi import error_responses
from service.render import draw_poses
from service.request import RequestDefaults, batch_body, read_batch_request, read_pose_request, single_body
from service.responses import answer_bytes, batch_response, model_info, pose_response, timings_ms
from service.serving import PoseService

router = APIRouter(tags=["pose"])
T = TypeVar("T")

ERROR_RESPONSES = error_responses(ErrorResponse, {
    400: "Malformed request or image", 401: "Missing or wrong API key", 413: "Body or image too large",
    415: "Unsupported content or image type", 422: "Invalid boxes or fields",
    429: "Overloaded: retry after Retry-After seconds", 500: "Our fault: inference failed or an internal error",
    503: "Not ready or shutting down: retry after Retry-After seconds",
    504: "Deadline exceeded: retry after Retry-After seconds",
})


@router.post("/v1/pose", response_model=PoseResponse, responses=ERROR_RESPONSES, openapi_extra=single_body(),
             summary="Keypoints of the people in one image")
async def pose(request: Request, defaults: RequestDefaults = Depends(request_defaults),
               poser: PoseService = Depends(ready_service)) -> Response:
    item = await read_pose_request(request, defaults)
    result = await cancel_on_disconnect(request, poser.estimate(item))
    answer = pose_response(result, served_model(request), poser.codec.card.keypoints)
    return Response(answer_bytes(answer), media_type="application/json", headers=timing_headers(answer.timings_ms))


@router.post("/v1/pose/render", responses={200: {"content": {"image/jpeg": {}, "image/png": {}},
                                                 "description": "The image with skeletons drawn"},
                                           **ERROR_RESPONSES},
             openapi_extra=single_body(), response_class=Response, summary="The image with skeletons drawn")
async def render(request: Request, format: Literal["jpeg", "png"] = Query("jpeg"),
                 defaults: RequestDefaults = Depends(request_defaults),
                 poser: PoseService = Depends(ready_service)) -> Response:
    item = await read_pose_request(request, defaults)
    skeleton = poser.codec.card.skeleton

    def draw(image: np.ndarray, persons: list[PersonPose]) -> bytes:
        return encode_image(draw_poses(image, persons, skeleton), format)

    result, encoded = await cancel_on_disconnect(request, poser.render(item, draw))
    headers = {"X-Model-Trained": str(poser.codec.card.trained).lower(), **timing_headers(timings_ms(result.timings_s))}
    return Response(encoded, media_type=f"image/{format}", headers=headers)


@router.post("/v1/pose/batch", response_model=BatchResponse, responses=ERROR_RESPONSES, openapi_extra=batch_body(),
             summary="Keypoints for many images; results and errors per item")
async def pose_batch(request: Request, defaults: RequestDefaults = Depends(request_defaults),
                     poser: PoseService = Depends(ready_service)) -> Response:
    items = await read_batch_request(request, defaults, service_state(request).settings.max_batch_items)
    outcomes = await cancel_on_disconnect(request, poser.estimate_many(items))
    metrics = service_state(request).metrics
    for outcome in outcomes:
        if isinstance(outcome, PoseError):  # a failed item is counted here; a failed call where it is answered
            metrics.count_error(outcome.code)
    answer = batch_response(outcomes, served_model(request), poser.codec.card.keypoints)
    return Response(answer_bytes(answer), media_type="application/json")


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work` (after the body has been read), cancelling it if the client hangs up first: its queued
    crops are then dropped uncomputed, and the request is counted as client_disconnected (499)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise PoseError("client_disconnected", "the client closed the connection before the answer was ready")


async def _disconnect(request: Request) -> None:
    """Returns when the ASGI server reports the client gone. Only called once the body has been read, so
    every message the server still has for this request is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# -- responses: serialised here, built by service/responses.py ----------------------------------------
def served_model(request: Request) -> ModelInfo:
    model = service_state(request).model
    assert model is not None  # ready_service let the request in
    return model_info(model)


def timing_headers(timings: dict[str, float]) -> dict[str, str]:
    return {"Server-Timing": ", ".join(f"{stage};dur={value}" for stage, value in timings.items())}
