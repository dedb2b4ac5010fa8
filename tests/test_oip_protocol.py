"""The Open Inference Protocol layer's pure parts on their own: tensors in (binary and JSON forms, malformed
bodies, bounded inflating, the header length) and out (read back by tritonclient)."""
from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from posecore.errors import PoseError
from service.oip.encoding import inflate
from service.oip.tensors import (
    InferResponse,
    OutputTensor,
    encode_response,
    header_length,
    parse_infer_request,
    select_outputs,
)
from tests.helpers import ROOT

tritonhttp = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (the dev extra)")

PHOTO = (ROOT / "examples" / "000000000785.jpg").read_bytes()  # COCO val2017, CC BY 2.0; 640x425
BOXES = np.array([[277.1183, 45.6997, 225.0913, 333.5603, 0.98], [20.5, 30.25, 120.125, 220.75, 0.5]], np.float32)
MODEL = "tiny"
JSON_VALUES = 10_000  # the bound on a request header's JSON values (the service derives its own from settings)
KEY = "oip-test-key"

# -- the protocol layer alone --------------------------------------------------------------------------------------
def serialized(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def binary_request(header: dict, tail: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + tail, len(head)


def parse(body: bytes, json_length: int | None):
    return parse_infer_request(body, json_length, JSON_VALUES)


def test_binary_and_json_tensors_parse_alike() -> None:
    boxes = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
    body, length = binary_request({"inputs": [
        {"name": "image", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 4 + 3 + 4 + 0}},
        {"name": "boxes", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]},
        serialized(b"abc", b"") + boxes.tobytes())
    binary = parse(body, length)
    nested = parse(json.dumps({"inputs": [
        {"name": "image", "shape": [2], "datatype": "BYTES", "data": ["abc", ""]},
        {"name": "boxes", "shape": [2, 4], "datatype": "FP32", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}]}).encode(), None)
    for parsed in (binary, nested):
        assert parsed.inputs["image"].elements == [b"abc", b""]
        np.testing.assert_array_equal(parsed.inputs["boxes"].array, boxes)
        assert parsed.inputs["boxes"].array.dtype == np.float32


@pytest.mark.parametrize(("head", "tail", "fragment"), [
    (b"{not json", None, "not valid JSON"),
    (b"[]", None, "JSON object"),
    (b'{"inputs": []}', None, "non-empty list"),
    (b'{"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}', None, "holds 2"),
    (b'{"inputs": [{"name": "image", "shape": [-1], "datatype": "BYTES", "data": ["a"]}]}', None, "non-negative"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1]}]}', None, "unsupported datatype"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["1"]}]}', None, "must be numbers"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1e10]}]}', None, "must be numbers"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [99999999999]}]}', None, "does not fit"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1, 2]]}]}', None, "nested deeper"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
     b' {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', None, "twice"),
    (b'{"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}',
     b"\x05\x00\x00\x00abc", "runs past the end of the body"),
    (b'{"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}]}',
     b"\x05\x00\x00\x00a", "runs past the end of its data"),
    (b'{"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 2}}]}',
     b"\x05\x00", "ends inside"),
    (b'{"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4}}]}',
     b"\x00\x00\x00\x00junk", "belong to no input"),
    (b'{"inputs": [{"name": "i", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}',
     b"\x00\x00\x00\x00", "takes 8 bytes"),
    (b'{"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "parameters": {"shared_memory_region": "r"}}]}',
     None, "shared memory"),
    (b'{"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "parameters": {"content_type": "base64"},'
     b' "data": ["***"]}]}', None, "base64"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "x",'
     b' "parameters": {"classification": 3}}]}', None, "classification"),
])
def test_malformed_requests_are_400(head: bytes, tail: bytes | None, fragment: str) -> None:
    with pytest.raises(PoseError) as refused:
        parse(head + (tail or b""), None if tail is None else len(head))
    assert refused.value.status == 400 and fragment in refused.value.message, refused.value.message


def test_inflating_is_bounded() -> None:
    document = b'{"inputs": []}' + b" " * 10_000
    assert inflate(gzip.compress(document), "gzip", 20_000) == document
    assert inflate(zlib.compress(document), "Deflate", 20_000) == document
    assert inflate(document, None, 20_000) == document
    for body, encoding, code in ((gzip.compress(document), "gzip", "payload_too_large"),  # 10 kB over a 5 kB limit
                                 (b"not gzip", "gzip", "invalid_request"),
                                 (gzip.compress(document)[:-20], "gzip", "invalid_request"),
                                 (document, "br", "unsupported_media_type")):
        with pytest.raises(PoseError) as refused:
            inflate(body, encoding, 5_000)
        assert refused.value.code == code


def test_the_header_length_is_checked() -> None:
    assert header_length(None, 10) is None and header_length("7", 10) == 7
    for value in ("11", "-1", "x", "1e3"):
        with pytest.raises(PoseError):
            header_length(value, 10)


def test_binary_answers_read_back_by_tritonclient() -> None:
    keypoints = np.arange(2 * 17 * 3, dtype=np.float32).reshape(2, 17, 3) / 7
    outputs = [OutputTensor("keypoints", "FP32", keypoints), OutputTensor("image_index", "INT32",
                                                                         np.array([0, 3], np.int32))]
    request = parse(json.dumps({"id": "r", "inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                                                    "data": [1]}],
                                              "outputs": [{"name": "image_index", "parameters": {"binary_data": False}},
                                                          {"name": "keypoints", "parameters": {"binary_data": True}}]
                                              }).encode(), None)
    chosen, binary = select_outputs(request, outputs)
    body, length = encode_response(InferResponse("m", "1", chosen, request.id, binary))
    assert length is not None and json.loads(body[:length])["outputs"][0]["data"] == [0, 3]
    result = tritonhttp.InferResult.from_response_body(body, header_length=length)
    np.testing.assert_array_equal(result.as_numpy("keypoints"), keypoints)
    np.testing.assert_array_equal(result.as_numpy("image_index"), [0, 3])
    assert result.get_response()["id"] == "r"
    with pytest.raises(PoseError, match="unknown output"):
        select_outputs(parse(b'{"inputs": [{"name": "x", "shape": [0], "datatype": "FP32", '
                                           b'"data": []}], "outputs": [{"name": "heatmaps"}]}', None), outputs)
