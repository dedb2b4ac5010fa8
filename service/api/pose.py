"""POST /v1/pose (multipart or raw image body), /v1/pose/render and /v1/pose/batch."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.api.deps import ready_pipeline, service_state
from service.errors import PoseError
from service.imaging import encode_image
from service.pipeline import PosePipeline, PoseResult, parse_boxes
from service.render import draw_poses
from service.schemas import BatchRequest, BatchResponse, ErrorResponse, PoseResponse

router = APIRouter(tags=["pose"])

RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")
BATCH_CONCURRENCY = 4  # images of one batch call in flight at once: enough to keep batches full

RETRY_AFTER_HEADER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                       "schema": {"type": "integer", "minimum": 1}}}
ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": text,
             **({"headers": RETRY_AFTER_HEADER} if status in (429, 503, 504) else {})}
    for status, text in {
        400: "Malformed request or image", 401: "Missing or wrong API key", 413: "Body or image too large",
        415: "Unsupported content or image type", 422: "Invalid boxes or fields",
        429: "Overloaded: retry after Retry-After seconds", 500: "Our fault: inference failed or an internal error",
        503: "Not ready or shutting down: retry after Retry-After seconds",
        504: "Deadline exceeded: retry after Retry-After seconds",
    }.items()
}
_BOXES_DOC = 'JSON list of person boxes, e.g. [[10, 20, 100, 200], [50, 60, 80, 160, 0.9]] (5th value: box score)'
_IMAGE_BODY = {"type": "string", "format": "binary"}
SINGLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": _IMAGE_BODY,
                        "boxes": {"type": "string", "description": _BOXES_DOC},
                        "flip": {"type": "boolean"},
                        "box_format": {"type": "string", "enum": ["xywh", "xyxy"]},
                    },
                }
            },
            **{t: {"schema": _IMAGE_BODY} for t in RAW_IMAGE_TYPES},
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": _IMAGE_BODY},
                        "boxes": {"type": "string", "description": "JSON list with one entry per image: null or "
                                  "a list of boxes"},
                        "flip": {"type": "boolean"},
                        "box_format": {"type": "string", "enum": ["xywh", "xyxy"]},
                    },
                }
            },
        },
    }
}


@dataclass
class PoseQuery:
    boxes: str | None
    flip: bool | None
    box_format: str


def pose_query(
    boxes: str | None = Query(None, description=_BOXES_DOC + ". For a raw image body; a form field wins."),
    flip: bool | None = Query(None, description="Flip test (2x compute); default from POSE_FLIP_TEST."),
    box_format: Literal["xywh", "xyxy"] = Query("xywh"),
) -> PoseQuery:
    return PoseQuery(boxes, flip, box_format)


@dataclass
class ImageRequest:
    data: bytes
    boxes: np.ndarray | None
    flip: bool


@router.post("/v1/pose", response_model=PoseResponse, responses=ERROR_RESPONSES, openapi_extra=SINGLE_BODY,
             summary="Keypoints of the people in one image")
async def pose(request: Request, query: PoseQuery = Depends(pose_query),
               pipeline: PosePipeline = Depends(ready_pipeline)) -> Response:
    item = await read_image_request(request, query)
    result = await pipeline.estimate(item.data, item.boxes, item.flip)
    body = pose_json(request, result)
    return Response(json_bytes(body), media_type="application/json", headers=timing_headers(body["timings_ms"]))


@router.post("/v1/pose/render", responses={200: {"content": {"image/jpeg": {}, "image/png": {}},
                                                 "description": "The image with skeletons drawn"},
                                           **ERROR_RESPONSES},
             openapi_extra=SINGLE_BODY, response_class=Response, summary="The image with skeletons drawn")
async def render(request: Request, query: PoseQuery = Depends(pose_query),
                 format: Literal["jpeg", "png"] = Query("jpeg"),
                 pipeline: PosePipeline = Depends(ready_pipeline)) -> Response:
    item = await read_image_request(request, query)
    result = await pipeline.estimate(item.data, item.boxes, item.flip)
    record_metrics(request, result)
    card = pipeline.card
    drawn = await asyncio.to_thread(draw_poses, result.prepared.image, result.persons, card.skeleton)
    encoded = await asyncio.to_thread(encode_image, drawn, format)
    headers = {"X-Model-Trained": str(card.trained).lower(), **timing_headers(ms(result.timings_s))}
    return Response(encoded, media_type=f"image/{format}", headers=headers)


@router.post("/v1/pose/batch", response_model=BatchResponse, responses=ERROR_RESPONSES, openapi_extra=BATCH_BODY,
             summary="Keypoints for many images; results and errors per item")
async def pose_batch(request: Request, query: PoseQuery = Depends(pose_query),
                     pipeline: PosePipeline = Depends(ready_pipeline)) -> Response:
    state = service_state(request)
    items = await read_batch_request(request, query, state.settings.max_batch_items)
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(index: int, item: ImageRequest | PoseError) -> dict:
        if isinstance(item, PoseError):
            return item_error(request, index, item)
        async with gate:
            try:
                result = await pipeline.estimate(item.data, item.boxes, item.flip)
                return {"index": index, "ok": True, "result": pose_json(request, result), "error": None}
            except PoseError as error:
                return item_error(request, index, error)

    results = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    body = {"model": model_json(request), "results": results}
    return Response(json_bytes(body), media_type="application/json")


# -- request parsing --------------------------------------------------------------------------------
def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_image_request(request: Request, query: PoseQuery) -> ImageRequest:
    settings = service_state(request).settings
    kind = media_type(request)
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise PoseError("invalid_request", "multipart field 'image' (a file) is required")
        data = await image.read()
        boxes_text = _text_field(form, "boxes") or query.boxes
        flip = _bool_field(form, "flip", query.flip)
        box_format = _box_format_field(form, query.box_format)
    elif kind in RAW_IMAGE_TYPES:
        data = await request.body()
        boxes_text, flip, box_format = query.boxes, query.flip, query.box_format
    else:
        raise PoseError("unsupported_media_type", "send multipart/form-data with an 'image' file, or the image "
                        f"itself with Content-Type one of {', '.join(RAW_IMAGE_TYPES)}")
    boxes = parse_boxes(_json_boxes(boxes_text), box_format)
    return ImageRequest(data, boxes, settings.flip_test if flip is None else flip)


async def read_batch_request(request: Request, query: PoseQuery, max_items: int) -> list[ImageRequest | PoseError]:
    """Per-item problems (bad base64, bad boxes) become that item's error; request-level ones raise."""
    settings = service_state(request).settings
    kind = media_type(request)
    if kind == "application/json":
        try:
            batch = BatchRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            code = "invalid_json" if first["type"] == "json_invalid" else "invalid_request"
            raise PoseError(code, f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}") from None
        _check_count(len(batch.items), max_items)
        flip = settings.flip_test if batch.flip is None else batch.flip
        return [_batch_item(lambda it=it: base64.b64decode(it.image_base64, validate=True), it.boxes,
                            batch.box_format, flip) for it in batch.items]
    if kind == "multipart/form-data":
        form = await request.form(max_files=max_items + 1, max_fields=8)
        files = [f for f in form.getlist("images") if isinstance(f, UploadFile)]
        if not files:
            raise PoseError("invalid_request", "multipart field 'images' (one or more files) is required")
        _check_count(len(files), max_items)
        boxes_all = _json_boxes(_text_field(form, "boxes") or query.boxes)
        if boxes_all is not None and not isinstance(boxes_all, list):
            raise PoseError("invalid_boxes", "'boxes' must be a JSON list with one entry (null or a list of boxes) "
                            "per image")
        if boxes_all is not None and len(boxes_all) != len(files):
            raise PoseError("invalid_boxes", f"'boxes' needs one entry per image ({len(files)}), got {len(boxes_all)}")
        flip = _bool_field(form, "flip", query.flip)
        flip = settings.flip_test if flip is None else flip
        box_format = _box_format_field(form, query.box_format)
        datas = [await f.read() for f in files]
        return [_batch_item(lambda d=d: d, None if boxes_all is None else boxes_all[i], box_format, flip)
                for i, d in enumerate(datas)]
    raise PoseError("unsupported_media_type", "send application/json ({'items': [...]}) or multipart/form-data "
                    "with 'images' files")


def _batch_item(read, boxes, box_format: str, flip: bool) -> ImageRequest | PoseError:
    try:
        data = read()
    except (binascii.Error, ValueError):
        return PoseError("invalid_request", "image_base64 is not valid base64")
    try:
        return ImageRequest(data, parse_boxes(boxes, box_format), flip)
    except PoseError as error:
        return error


def _check_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise PoseError("too_many_items", f"{count} images in one batch; the limit is {max_items}")


def _text_field(form, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value or None
    raise PoseError("invalid_request", f"form field '{name}' must be text, not a file")


def _bool_field(form, name: str, default: bool | None) -> bool | None:
    value = _text_field(form, name)
    if value is None:
        return default
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise PoseError("invalid_request", f"form field '{name}' must be true or false")


def _box_format_field(form, default: str) -> str:
    value = _text_field(form, "box_format")
    if value is None:
        return default
    if value not in ("xywh", "xyxy"):
        raise PoseError("invalid_request", f"form field 'box_format' must be 'xywh' or 'xyxy', not {value[:20]!r}")
    return value


def _json_boxes(text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise PoseError("invalid_json", "boxes is not valid JSON") from None


# -- responses --------------------------------------------------------------------------------------
def json_bytes(body: dict) -> bytes:
    """Strict JSON: a NaN or infinity that slipped through is our fault (500), never invalid JSON."""
    return json.dumps(body, allow_nan=False).encode()


def ms(timings_s: dict[str, float]) -> dict[str, float]:
    return {stage: round(seconds * 1000, 3) for stage, seconds in timings_s.items()}


def timing_headers(timings_ms: dict[str, float]) -> dict[str, str]:
    return {"Server-Timing": ", ".join(f"{stage};dur={value}" for stage, value in timings_ms.items())}


def model_json(request: Request) -> dict:
    state = service_state(request)
    card = state.model.card
    return {"name": card.name, "arch": card.arch, "trained": card.trained,
            "provider": state.model.backend.provider, "warning": card.warning}


def record_metrics(request: Request, result: PoseResult) -> None:
    metrics = service_state(request).metrics
    for stage, seconds in result.timings_s.items():
        metrics.stage_latency.labels(stage=stage).observe(seconds)
    metrics.persons_per_image.observe(len(result.persons))


def pose_json(request: Request, result: PoseResult) -> dict:
    """The response body of one image; also records its stage metrics."""
    record_metrics(request, result)
    state = service_state(request)
    names = state.model.card.keypoints
    persons = []
    for person in result.persons:
        kps = person.keypoints.tolist()
        persons.append({
            "box": [float(v) for v in person.box],
            "box_score": person.box_score,
            "score": person.score,
            "keypoints": [{"name": n, "x": k[0], "y": k[1], "score": k[2]} for n, k in zip(names, kps)],
            "coco_keypoints": [v for k in kps for v in k],
        })
    prepared = result.prepared
    return {
        "image": {"width": prepared.width, "height": prepared.height},
        "model": model_json(request),
        "flip": prepared.flip,
        "persons": persons,
        "timings_ms": ms(result.timings_s),
    }


def item_error(request: Request, index: int, error: PoseError) -> dict:
    service_state(request).metrics.errors.labels(code=error.code).inc()
    return {"index": index, "ok": False, "result": None, "error": error.to_dict()}
