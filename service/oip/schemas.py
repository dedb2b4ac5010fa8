"""The v2 routes' documented bodies (OpenAPI and the schema fuzzing check the answers against them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.oip.contract import BOX_IMAGE_INDEX, BOXES, CALL_FIELDS, IMAGE
from service.oip.tensors import BYTES, NUMPY_TYPES


class ProtocolError(BaseModel):
    error: str = Field(description="'<stable error code>: <message>'; the request ID is in X-Request-ID.")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 where the size varies.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ConfigTensor(BaseModel):
    name: str
    data_type: str
    dims: list[int]
    optional: bool | None = None


class ModelConfig(BaseModel):
    """Triton's model configuration, minimal form (enough for perf_analyzer)."""

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]


# The infer request is read by service/oip/tensors.py itself (its binary form is no JSON), so its schema is
# written out here, inline, for OpenAPI and the schema fuzzing.
_OBJECT = {"type": "object", "additionalProperties": True}


def _parameter(name: str, schema: dict[str, Any]) -> str:
    kind = "bool" if schema.get("type") == "boolean" else " or ".join(map(repr, schema.get("enum", ())))
    return f"{name} ({kind})"


# the request options of the /v1 field table, then the protocol's own
PARAMETERS = ", ".join([*(_parameter(f.name, f.schema) for f in CALL_FIELDS.values()), "binary_data_output (bool)"])
INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {**_OBJECT, "description": PARAMETERS + "."},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string", "enum": [IMAGE, BOXES, BOX_IMAGE_INDEX]},
                           "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                           "datatype": {"type": "string", "enum": [BYTES, *NUMPY_TYPES]},
                           "parameters": _OBJECT, "data": {"type": "array"}}}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": _OBJECT}}},
    },
}


class InferTensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponseBody(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferTensorOut]
