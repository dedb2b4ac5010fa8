"""Requests in one home: every front door turns what it received into `PoseRequest`s here.

The request fields are one table (`FIELDS`): each knows its JSON schema and how to read itself from text (a
query parameter or a form field) and from JSON (the batch body, or a tensor protocol's parameters). The
OpenAPI request bodies are derived from the same table, and `build_request` resolves defaults (the flip test's
from the settings) once. Adding a field means: the option in the contract (posecore/contract.py `PoseOptions`,
its description), a row in FIELDS, and its use in `build_request` / `PoseRequest`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from posecore.boxes import parse_boxes
from posecore.codecs.spec import DECODINGS
from posecore.contract import BOX_FORMATS, BOXES_DESCRIPTION, PoseOptions
from posecore.errors import PoseError
from service.json_limits import check_json_shape, json_value_limit

RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")


@dataclass(frozen=True)
class PoseRequest:
    """One image to estimate poses in, validated as far as can be without decoding it."""

    image: bytes
    boxes: np.ndarray | None  # (N, 5) x, y, w, h, score from posecore.boxes; None: not given
    flip: bool  # resolved: the caller's choice or the service default
    detect: bool = True  # without boxes: run the person detector (when one is configured)
    decode: str | None = None  # the test-time pipeline (posecore.codecs.spec); None: the model card's


@dataclass(frozen=True)
class RequestDefaults:
    """What the settings decide for a request that does not say."""

    flip: bool
    max_boxes: int


# -- reading one value ------------------------------------------------------------------------------
def bool_from_text(name: str, text: str) -> bool:
    """A boolean option given as text (query parameter, form field): true/false, 1/0, yes/no, on/off."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise PoseError("invalid_request", f"'{name}' must be true or false, not {text[:20]!r}")


def _bool_from_json(name: str, value: Any) -> bool:
    if not isinstance(value, bool):  # JSON's "true" (a string) or 1 is not a boolean
        raise PoseError("invalid_request", f"'{name}' must be a JSON boolean (true or false)")
    return value


def _box_format(name: str, value: Any) -> str:
    if value not in BOX_FORMATS:
        raise PoseError("invalid_request", f"'{name}' must be 'xywh' or 'xyxy', not {str(value)[:20]!r}")
    return str(value)


def decoding(name: str, value: Any) -> str:
    """A `decode` option: one of the pipeline names (whether the card allows it is the codec's to say)."""
    if value not in DECODINGS:
        raise PoseError("invalid_request", f"'{name}' must be one of {', '.join(DECODINGS)}, not {str(value)[:20]!r}")
    return str(value)


def _boxes_from_json(name: str, value: Any) -> Any:
    """In a JSON body the boxes are a list (its rows are checked by posecore.boxes) or null; anything else is a
    malformed body, not a bad box."""
    if value is not None and not isinstance(value, list):
        raise PoseError("invalid_request", f"'{name}' must be a JSON list of boxes or null")
    return value


def _json_text(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise PoseError("invalid_json", f"'{name}' is not valid JSON") from None


@dataclass(frozen=True)
class RequestField:
    name: str
    schema: dict[str, Any]  # JSON schema of the value in a JSON body
    text_schema: dict[str, Any]  # ... as a query parameter or form field
    description: str
    from_text: Callable[[str, str], Any]
    from_json: Callable[[str, Any], Any]
    per_item: bool = False  # in a batch call: one value per image (else one per call)
    item_override: bool = False  # a call-level field that a batch item may also set for itself


_BOOL = {"type": "boolean"}
_FORMAT = {"type": "string", "enum": list(BOX_FORMATS)}
_DECODING = {"type": "string", "enum": list(DECODINGS)}
_BOX_LIST = {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 5}}

def _described(name: str) -> str:
    """An option's description, from the contract (posecore/contract.py)."""
    return PoseOptions.model_fields[name].description or ""


FIELDS: tuple[RequestField, ...] = (
    RequestField("boxes", {"anyOf": [_BOX_LIST, {"type": "null"}]}, {"type": "string"}, BOXES_DESCRIPTION,
                 _json_text, _boxes_from_json, per_item=True),
    RequestField("box_format", _FORMAT, _FORMAT, _described("box_format"), _box_format, _box_format),
    RequestField("flip", _BOOL, _BOOL, _described("flip"), bool_from_text, _bool_from_json),
    RequestField("detect", _BOOL, _BOOL, _described("detect"), bool_from_text, _bool_from_json),
    RequestField("decode", _DECODING, _DECODING, _described("decode"), decoding, decoding, item_override=True),
)


def build_request(image: bytes, values: Mapping[str, Any], defaults: RequestDefaults) -> PoseRequest:
    """Typed field values (any subset of FIELDS) -> a validated PoseRequest."""
    box_format = values.get("box_format") or "xywh"
    flip = values.get("flip")
    detect = values.get("detect")
    return PoseRequest(
        image=image,
        boxes=parse_boxes(values.get("boxes"), box_format, defaults.max_boxes),
        flip=defaults.flip if flip is None else flip,
        detect=True if detect is None else detect,
        decode=values.get("decode"),
    )


# -- the HTTP front doors ---------------------------------------------------------------------------
def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _text_values(source: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in FIELDS:
        raw = source.get(field.name)
        if raw is None or raw == "":
            continue
        if not isinstance(raw, str):
            raise PoseError("invalid_request", f"form field '{field.name}' must be text, not a file")
        values[field.name] = field.from_text(field.name, raw)
    return values


def _query_and_form(request: Request, form: FormData | None) -> dict[str, Any]:
    """Query parameters, then form fields over them (a form field wins)."""
    values = _text_values(request.query_params)
    if form is not None:
        values |= _text_values(form)
    return values


async def read_pose_request(request: Request, defaults: RequestDefaults) -> PoseRequest:
    """POST /v1/pose and /v1/pose/render: a multipart form with an 'image' file, or the image as the body."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=len(FIELDS) + 1)
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise PoseError("invalid_request", "multipart field 'image' (a file) is required")
        data = await image.read()
        return build_request(data, _query_and_form(request, form), defaults)
    if kind in RAW_IMAGE_TYPES:
        values = _query_and_form(request, None)  # before the body: a bad field costs no upload
        return build_request(await request.body(), values, defaults)
    raise PoseError("unsupported_media_type", "send multipart/form-data with an 'image' file, or the image itself "
                    f"with Content-Type one of {', '.join(RAW_IMAGE_TYPES)}")


async def read_batch_request(request: Request, defaults: RequestDefaults,
                             max_items: int) -> list[PoseRequest | PoseError]:
    """POST /v1/pose/batch. Per-item problems (bad base64, bad boxes) become that item's error; request-level
    ones (malformed body, too many items, a bad call-level field) raise."""
    kind = media_type(request)
    if kind == "application/json":
        body = await request.body()
        # CPU-bound on a hostile body (its structure is counted, then parsed, base64 decoded): off the event loop
        return await asyncio.to_thread(_batch_from_json, body, defaults, max_items)
    if kind == "multipart/form-data":
        form = await request.form(max_files=max_items + 1, max_fields=len(FIELDS) + 1)
        files = [f for f in form.getlist("images") if isinstance(f, UploadFile)]
        if not files:
            raise PoseError("invalid_request", "multipart field 'images' (one or more files) is required")
        _check_count(len(files), max_items)
        values = _query_and_form(request, form)
        boxes_all = values.pop("boxes", None)
        if boxes_all is not None and (not isinstance(boxes_all, list) or len(boxes_all) != len(files)):
            raise PoseError("invalid_boxes", f"'boxes' must be a JSON list with one entry (null or a list of boxes) "
                            f"per image ({len(files)})")
        datas = [await f.read() for f in files]
        return [_item(functools.partial(bytes, d), {**values, "boxes": None if boxes_all is None else boxes_all[i]},
                      defaults) for i, d in enumerate(datas)]
    raise PoseError("unsupported_media_type", "send application/json ({'items': [...]}) or multipart/form-data "
                    "with 'images' files")


def _batch_from_json(body: bytes, defaults: RequestDefaults, max_items: int) -> list[PoseRequest | PoseError]:
    check_json_shape(body, json_value_limit(max_items, defaults.max_boxes))
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise PoseError("invalid_json", "the body is not valid JSON") from None
    call_fields = {f.name: f for f in FIELDS if not f.per_item}
    item_fields = {f.name: f for f in FIELDS if f.per_item or f.item_override}
    if not isinstance(document, dict):
        raise PoseError("invalid_request", "body: must be a JSON object {'items': [...]}")
    _refuse_unknown("body", document, {"items", *call_fields})
    items = document.get("items")
    if not isinstance(items, list) or not items:
        raise PoseError("invalid_request", "items: a non-empty list of {'image_base64': ...} objects is required")
    _check_count(len(items), max_items)
    values = {name: call_fields[name].from_json(name, v) for name, v in document.items()
              if name in call_fields and v is not None}
    requests: list[PoseRequest | PoseError] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise PoseError("invalid_request", f"items.{i}: must be an object with 'image_base64'")
        _refuse_unknown(f"items.{i}", item, {"image_base64", *item_fields})
        encoded = item.get("image_base64")
        if not isinstance(encoded, str):
            raise PoseError("invalid_request", f"items.{i}.image_base64: a base64 string is required")
        own = {name: item_fields[name].from_json(name, item[name]) for name in item_fields
               if item.get(name) is not None}  # null: not given
        decode = functools.partial(base64.b64decode, encoded, validate=True)
        requests.append(_item(decode, {**values, **own}, defaults))
    return requests


def _item(read: Callable[[], bytes], values: dict[str, Any], defaults: RequestDefaults) -> PoseRequest | PoseError:
    try:
        data = read()
    except (binascii.Error, ValueError):
        return PoseError("invalid_request", "image_base64 is not valid base64")
    try:
        return build_request(data, values, defaults)
    except PoseError as error:
        return error


def _refuse_unknown(where: str, document: dict, allowed: set[str]) -> None:
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise PoseError("invalid_request", f"{where}: unknown field(s) {', '.join(map(repr, unknown))[:200]}; "
                        f"allowed: {', '.join(sorted(allowed))}")


def _check_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise PoseError("too_many_items", f"{count} images in one batch; the limit is {max_items}")


# -- OpenAPI, derived from FIELDS -------------------------------------------------------------------
_IMAGE_BODY = {"type": "string", "format": "binary"}


def query_parameters() -> list[dict[str, Any]]:
    return [{"name": f.name, "in": "query", "required": False, "schema": f.text_schema,
             "description": f.description + " For a raw image body; a form field wins."} for f in FIELDS]


def single_body() -> dict[str, Any]:
    form_fields = {f.name: {**f.text_schema, "description": f.description} for f in FIELDS}
    return {
        "parameters": query_parameters(),
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                               "properties": {"image": _IMAGE_BODY, **form_fields}}},
            **{t: {"schema": _IMAGE_BODY} for t in RAW_IMAGE_TYPES},
        }},
    }


def batch_body() -> dict[str, Any]:
    item = {"type": "object", "required": ["image_base64"], "additionalProperties": False, "properties": {
        "image_base64": {"type": "string", "description": "The image file (JPEG, PNG, WebP, BMP), base64-encoded."},
        **{f.name: {**f.schema, "description": f.description} for f in FIELDS if f.per_item or f.item_override}}}
    call = {f.name: {**f.schema, "description": f.description} for f in FIELDS if not f.per_item}
    form_fields = {f.name: {**f.text_schema, "description": f.description} for f in FIELDS if not f.per_item}
    return {
        "parameters": query_parameters(),
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "required": ["items"], "additionalProperties": False,
                                            "properties": {"items": {"type": "array", "items": item, "minItems": 1},
                                                           **call}}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["images"], "properties": {
                "images": {"type": "array", "items": _IMAGE_BODY},
                "boxes": {"type": "string", "description": "JSON list with one entry per image: null or a list of "
                          "boxes"},
                **form_fields}}},
        }},
    }
