"""POST /v1/pose (multipart or raw image body), /v1/pose/render and /v1/pose/batch.

Parsing is service/request.py's, the work is service/serving.py's; this file routes and serialises.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from posecore.codec import PersonPose
from posecore.errors import PoseError
from posecore.imaging import encode_image
from service.api.deps import ready_service, request_defaults, service_state
from service.api.openapi import error_responses
from service.render import draw_poses
from service.request import RequestDefaults, batch_body, read_batch_request, read_pose_request, single_body
from service.schemas import BatchResponse, ErrorResponse, PoseResponse
from service.serving import PoseResult, PoseService

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
    body = pose_json(request, result)
    return Response(json_bytes(body), media_type="application/json", headers=timing_headers(body["timings_ms"]))


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
    headers = {"X-Model-Trained": str(poser.codec.card.trained).lower(), "X-Pose-Decode": result.decode,
               **timing_headers(ms(result.timings_s))}
    return Response(encoded, media_type=f"image/{format}", headers=headers)


@router.post("/v1/pose/batch", response_model=BatchResponse, responses=ERROR_RESPONSES, openapi_extra=batch_body(),
             summary="Keypoints for many images; results and errors per item")
async def pose_batch(request: Request, defaults: RequestDefaults = Depends(request_defaults),
                     poser: PoseService = Depends(ready_service)) -> Response:
    items = await read_batch_request(request, defaults, service_state(request).settings.max_batch_items)
    outcomes = await cancel_on_disconnect(request, poser.estimate_many(items))
    results = [item_json(request, index, outcome) for index, outcome in enumerate(outcomes)]
    body = {"model": model_json(request), "results": results}
    return Response(json_bytes(body), media_type="application/json")


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


# -- responses: plain serialisation -----------------------------------------------------------------
def json_bytes(body: dict) -> bytes:
    """Strict JSON: a NaN or infinity that slipped through is our fault (500), never invalid JSON."""
    return json.dumps(body, allow_nan=False).encode()


def ms(timings_s: dict[str, float]) -> dict[str, float]:
    return {stage: round(seconds * 1000, 3) for stage, seconds in timings_s.items()}


def timing_headers(timings_ms: dict[str, float]) -> dict[str, str]:
    return {"Server-Timing": ", ".join(f"{stage};dur={value}" for stage, value in timings_ms.items())}


def model_json(request: Request) -> dict:
    model = service_state(request).model
    assert model is not None  # ready_service let the request in
    card = model.card
    return {"name": card.name, "arch": card.arch, "trained": card.trained, "provider": model.backend.provider,
            "warning": card.warning}


def pose_json(request: Request, result: PoseResult) -> dict:
    """The response body of one image."""
    model = service_state(request).model
    assert model is not None
    names = model.card.keypoints
    persons = []
    for person in result.persons:
        kps = person.keypoints.tolist()
        persons.append({
            "box": [float(v) for v in person.box],
            "box_score": person.box_score,
            "score": person.score,
            "keypoints": [{"name": n, "x": k[0], "y": k[1], "score": k[2]}
                          for n, k in zip(names, kps, strict=True)],
            "coco_keypoints": [v for k in kps for v in k],
        })
    width, height = result.image_wh
    return {
        "image": {"width": width, "height": height},
        "model": model_json(request),
        "flip": result.flip,
        "decode": result.decode,
        "persons": persons,
        "timings_ms": ms(result.timings_s),
    }


def item_json(request: Request, index: int, outcome: PoseResult | PoseError) -> dict:
    if isinstance(outcome, PoseError):
        service_state(request).metrics.errors.labels(code=outcome.code).inc()
        return {"index": index, "ok": False, "result": None, "error": outcome.to_dict()}
    return {"index": index, "ok": True, "result": pose_json(request, outcome), "error": None}
