"""The Open Inference Protocol v2's REST tensors, both ways, for any model: pure functions, no HTTP.

An infer request is a JSON document, optionally followed by binary tensor data (Triton's binary tensor data
extension): the header `Inference-Header-Content-Length` says where the JSON ends, and every input whose
parameters carry `binary_data_size` takes its bytes, in input order, from what follows. BYTES elements in binary
form are each a 4-byte little-endian length and then the bytes; in JSON they are strings (UTF-8, or base64 when
the input's parameters say `"content_type": "base64"`). Numeric data in JSON may be flat or nested row-major.

Answers go back the same way: outputs as JSON `data`, or as binary data after the JSON when asked for
(`binary_data_output` for all, or `binary_data` per requested output). Every malformed request is a
PoseError("invalid_request" / "invalid_json"), a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from posecore.errors import PoseError
from service.json_limits import check_json_shape

# v2 datatype -> little-endian numpy dtype. BF16 has no numpy type and is not served here.
NUMPY_TYPES: dict[str, str] = {
    "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
BYTES = "BYTES"
MAX_RANK = 8  # no tensor of this service needs more; bounds the work of reading a nested JSON array
MAX_HEADER_DIGITS = 19  # Inference-Header-Content-Length: an int64, as Triton reads it
# (name, datatype, shape) of an input, checked before its data are read (the model's own contract)
InputCheck = Callable[[str, str, tuple[int, ...]], None]


@dataclass(frozen=True)
class Tensor:
    """One input: numeric data as a numpy array of `shape`, BYTES as a flat list of byte strings."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray | None = None
    elements: list[bytes] | None = None


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: as the request's binary_data_output says


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, Tensor]
    outputs: list[RequestedOutput] | None  # None: every output of the model

    @property
    def binary_output(self) -> bool:
        return self.parameters.get("binary_data_output") is True  # checked to be a boolean when parsed


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    array: np.ndarray


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[OutputTensor]
    id: str | None = None
    binary: dict[str, bool] = field(default_factory=dict)  # output name -> sent as binary data
    parameters: dict[str, Any] | None = None  # e.g. {"decode": "dark"}: the test-time pipeline that ran


def bad(message: str) -> PoseError:
    return PoseError("invalid_request", message)


# -- requests -------------------------------------------------------------------------------------------
def header_length(value: str | None, body_size: int) -> int | None:
    """The Inference-Header-Content-Length header: where the JSON ends (None: the whole body is JSON)."""
    if value is None:
        return None
    text = value.strip()
    # ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses, and int() refuses over
    # 4300 digits; either was a 500
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_HEADER_DIGITS) or int(text) > body_size:
        raise bad(f"Inference-Header-Content-Length must be a whole number of bytes up to the body's {body_size}, "
                  f"not {value[:20]!r}")
    return int(text)


def parse_infer_request(body: bytes, json_length: int | None, max_json_values: int,
                        check_input: InputCheck | None = None) -> InferRequest:
    """A request body (JSON, or JSON then binary data when json_length is given) -> InferRequest.

    The JSON's structure is bounded before it is parsed (service/json_limits.py), and `check_input` sees each
    input's name, datatype and shape before its data are read or split. CPU-bound: call it off the event loop."""
    head, tail = (body, b"") if json_length is None else (body[:json_length], body[json_length:])
    check_json_shape(head, max_json_values, "the inference request header")
    try:
        document = json.loads(head)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise PoseError("invalid_json", "the inference request header is not valid JSON") from None
    if not isinstance(document, dict):
        raise bad("the inference request must be a JSON object with 'inputs'")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad("'id' must be a string")
    parameters = _object(document.get("parameters"), "parameters")
    if not isinstance(parameters.get("binary_data_output", False), bool):
        raise bad("parameter binary_data_output must be a JSON boolean (true or false), not a string or number")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad("'inputs' must be a non-empty list of tensors")
    binary = _BinaryReader(tail)
    inputs: dict[str, Tensor] = {}
    for i, raw in enumerate(raw_inputs):
        tensor = _input(raw, i, binary, check_input)
        if tensor.name in inputs:
            raise bad(f"input '{tensor.name}' is given twice")
        inputs[tensor.name] = tensor
    binary.check_consumed()
    return InferRequest(request_id, parameters, inputs, _requested_outputs(document.get("outputs")))


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"'{where}' must be a JSON object")
    return value


def _input(raw: Any, index: int, binary: _BinaryReader, check_input: InputCheck | None) -> Tensor:
    if not isinstance(raw, dict):
        raise bad(f"inputs[{index}] must be an object with name, shape, datatype and data")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise bad(f"inputs[{index}].name must be a non-empty string")
    if datatype != BYTES and datatype not in NUMPY_TYPES:
        raise bad(f"input '{name}': unsupported datatype {str(datatype)[:20]!r}")
    if (not isinstance(shape, list) or len(shape) > MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise bad(f"input '{name}': shape must be a list of at most {MAX_RANK} non-negative integers")
    if check_input is not None:
        check_input(name, datatype, tuple(shape))
    parameters = _object(raw.get("parameters"), f"input '{name}' parameters")
    if "shared_memory_region" in parameters:
        raise bad(f"input '{name}': shared memory is not supported; send the data in the request")
    count = math.prod(shape)
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in raw:
            raise bad(f"input '{name}' has both 'data' and binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"input '{name}': binary_data_size must be a non-negative integer")
        return _from_binary(name, datatype, tuple(shape), count, binary.take(name, size))
    if "data" not in raw:
        raise bad(f"input '{name}' has neither 'data' nor binary_data_size")
    flat = _flatten(raw["data"], name, len(shape))
    if len(flat) != count:
        raise bad(f"input '{name}': shape {shape} holds {count} elements, 'data' has {len(flat)}")
    if datatype == BYTES:
        return Tensor(name, datatype, tuple(shape), elements=_bytes_from_json(flat, name, parameters))
    return Tensor(name, datatype, tuple(shape), array=_numbers_from_json(flat, name, datatype, tuple(shape)))


def _from_binary(name: str, datatype: str, shape: tuple[int, ...], count: int, data: bytes) -> Tensor:
    if datatype == BYTES:
        elements = _split_bytes(data, name, count)
        if len(elements) != count:
            raise bad(f"input '{name}': shape {list(shape)} holds {count} elements, the binary data has "
                      f"{len(elements)}")
        return Tensor(name, datatype, shape, elements=elements)
    dtype = np.dtype(NUMPY_TYPES[datatype])
    if len(data) != count * dtype.itemsize:
        raise bad(f"input '{name}': shape {list(shape)} of {datatype} takes {count * dtype.itemsize} bytes, "
                  f"binary_data_size says {len(data)}")
    return Tensor(name, datatype, shape, array=np.frombuffer(data, dtype=dtype).reshape(shape))


def _split_bytes(data: bytes, name: str, count: int) -> list[bytes]:
    """Serialized BYTES: each element a 4-byte little-endian length and then that many bytes. Stops after one
    element more than the shape's `count` (the caller refuses that)."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(data) and len(elements) <= count:
        if offset + 4 > len(data):
            raise bad(f"input '{name}': BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise bad(f"input '{name}': a BYTES element of {length} bytes runs past the end of its data")
        elements.append(data[offset:offset + length])
        offset += length
    return elements


def _flatten(data: Any, name: str, rank: int) -> list[Any]:
    """Flat or nested (row-major) JSON data -> a flat list; nesting deeper than the shape's rank is refused
    (so the recursion is at most MAX_RANK deep)."""
    if not isinstance(data, list):
        raise bad(f"input '{name}': 'data' must be a JSON array")
    flat: list[Any] = []

    def walk(items: list[Any], depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                if depth >= max(rank, 1):
                    raise bad(f"input '{name}': 'data' is nested deeper than its shape")
                walk(item, depth + 1)
            else:
                flat.append(item)

    walk(data, 1)
    return flat


def _bytes_from_json(flat: list[Any], name: str, parameters: Mapping[str, Any]) -> list[bytes]:
    if not all(isinstance(v, str) for v in flat):
        raise bad(f"input '{name}': BYTES data in JSON must be strings")
    if parameters.get("content_type") == "base64":
        try:
            return [base64.b64decode(v, validate=True) for v in flat]
        except (binascii.Error, ValueError):
            raise bad(f"input '{name}': not valid base64") from None
    return [v.encode() for v in flat]


def _numbers_from_json(flat: list[Any], name: str, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    if datatype == "BOOL":
        ok = all(isinstance(v, bool) for v in flat)
    elif datatype.startswith("FP"):
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat)
    else:
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in flat)
    if not ok:
        raise bad(f"input '{name}': {datatype} data must be {'booleans' if datatype == 'BOOL' else 'numbers'}")
    try:
        with np.errstate(over="raise"):
            return np.array(flat, dtype=np.dtype(NUMPY_TYPES[datatype])).reshape(shape)
    except (OverflowError, FloatingPointError):
        raise bad(f"input '{name}': a value does not fit {datatype}") from None


class _BinaryReader:
    """The binary data after the JSON, handed out in input order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, name: str, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise bad(f"input '{name}': binary_data_size {size} runs past the end of the body (missing "
                      "Inference-Header-Content-Length?)")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def check_consumed(self) -> None:
        if self.offset != len(self.data):
            raise bad(f"{len(self.data) - self.offset} bytes after the inference header belong to no input")


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise bad("'outputs' must be a list of {'name': ...} objects")
    outputs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad(f"outputs[{i}] must be an object with a 'name'")
        parameters = _object(item.get("parameters"), f"outputs[{i}].parameters")
        if parameters.get("classification"):
            raise bad(f"output '{item['name']}': the classification extension is not supported")
        if "shared_memory_region" in parameters:
            raise bad(f"output '{item['name']}': shared memory is not supported")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise bad(f"output '{item['name']}': binary_data must be true or false")
        outputs.append(RequestedOutput(item["name"], binary))
    return outputs


# -- responses ------------------------------------------------------------------------------------------
def select_outputs(request: InferRequest, available: Sequence[OutputTensor]) -> tuple[list[OutputTensor],
                                                                                     dict[str, bool]]:
    """The outputs to send, in the order asked for (all, in the model's order, when none were named), and
    which of them go as binary data."""
    by_name = {o.name: o for o in available}
    check_requested_outputs(request, list(by_name))
    if request.outputs is None:
        return list(available), {o.name: request.binary_output for o in available}
    chosen, binary = [], {}
    for wanted in request.outputs:
        chosen.append(by_name[wanted.name])
        binary[wanted.name] = request.binary_output if wanted.binary is None else wanted.binary
    return chosen, binary


def check_requested_outputs(request: InferRequest, names: Sequence[str]) -> None:
    """Every requested output exists, once: checked before any work, not after it."""
    seen: set[str] = set()
    for wanted in request.outputs or ():
        if wanted.name not in names:
            raise bad(f"unknown output '{wanted.name[:100]}'; the outputs are {', '.join(names)}")
        if wanted.name in seen:
            raise bad(f"output '{wanted.name[:100]}' is requested twice")
        seen.add(wanted.name)


def encode_response(response: InferResponse) -> tuple[bytes, int | None]:
    """(body, json_length): JSON only (json_length None), or the JSON then each binary output's raw bytes."""
    outputs_json: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in response.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.array.shape)}
        if response.binary.get(output.name):
            raw = np.ascontiguousarray(output.array, dtype=np.dtype(NUMPY_TYPES[output.datatype])).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = output.array.reshape(-1).tolist()
        outputs_json.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = outputs_json
    head = json.dumps(document, allow_nan=False).encode()  # a NaN that slipped through is our fault, a 500
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
