"""Schema fuzzing: schemathesis generates requests from the service's own OpenAPI (valid and invalid ones) and
sends them to the app in process (ASGI, with the real lifespan, ONNX Runtime and batcher). No response may be
a 5xx, and every response must conform to the schema: a documented status code, a documented content type and
a body that validates against the documented schema (ErrorResponse for every refusal)."""

from __future__ import annotations

import dataclasses
import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (after the importorskip)
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from posecore.backend import ProviderStatus  # noqa: E402
from service.main import create_app, load_model  # noqa: E402
from service.settings import Settings  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Examples per operation, body form and generation mode: the module takes well under 90 s on 2 cores. The run is
# derandomized (the same examples every time, so CI is reproducible); POSE_FUZZ_RANDOM=1 explores new ones and
# POSE_FUZZ_EXAMPLES=N runs more, for a longer hunt by hand.
MAX_EXAMPLES = int(os.environ.get("POSE_FUZZ_EXAMPLES", "30"))
DERANDOMIZE = os.environ.get("POSE_FUZZ_RANDOM", "") != "1"


OPERATIONS = [
    ("POST", "/v1/pose"),
    ("POST", "/v1/pose/render"),
    ("POST", "/v1/pose/batch"),
    ("POST", "/v1/pose/video"),
    ("POST", "/v1/pose/video/render"),
    ("GET", "/v1/model"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    # the Open Inference Protocol v2 front door (service/api/oip.py)
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{model_name}"),
    ("GET", "/v2/models/{model_name}/versions/{model_version}"),
    ("GET", "/v2/models/{model_name}/ready"),
    ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"),
    ("GET", "/v2/models/{model_name}/config"),
    ("GET", "/v2/models/{model_name}/versions/{model_version}/config"),
    ("POST", "/v2/models/{model_name}/infer"),
    ("POST", "/v2/models/{model_name}/versions/{model_version}/infer"),
]
# Generated model names would all be 404s: the v2 operations are fuzzed at the served model (tests/test_oip.py
# covers the 404s), so that the generated bodies reach the tensor parser.
SERVED = {"model_name": "tiny", "model_version": "1"}


def at_served_model(case) -> None:
    for name, value in SERVED.items():
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = value


@pytest.fixture(scope="module")
def api_schema(tiny_onnx):
    app = create_app(Settings(model_path=tiny_onnx, max_batch_items=4, max_boxes=5, intra_op_threads=1,
                              max_image_bytes=1_000_000, max_body_bytes=2_000_000))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_fuzzed_operations_are_all_there_are(api_schema):
    documented = {(method.upper(), path) for path, methods in api_schema.raw_schema["paths"].items()
                  for method in methods}
    assert documented == set(OPERATIONS)


# schemathesis' own pytest integration (schema.parametrize / pytest.from_fixture) trips over pytest 9's node
# internals, so each operation's Hypothesis strategy (its public API) is driven here directly.
RAW = ["multipart/form-data", "image/jpeg", "application/octet-stream"]
VIDEO = ["multipart/form-data", "video/mp4", "application/octet-stream"]
MEDIA_TYPES = {"/v1/pose": RAW, "/v1/pose/render": RAW, "/v1/pose/video": VIDEO, "/v1/pose/video/render": VIDEO,
               "/v1/pose/batch": ["application/json", "multipart/form-data"],
               "/v2/models/{model_name}/infer": ["application/json", "application/octet-stream"],
               "/v2/models/{model_name}/versions/{model_version}/infer": ["application/json",
                                                                          "application/octet-stream"]}
# Every request body form of every operation, valid and invalid; the GET operations take no input, so there is
# nothing to make invalid. (Left to itself, schemathesis would pick one body form of an operation most of the time.)
FUZZED = [(method, path, media_type, mode) for method, path in OPERATIONS
          for media_type in MEDIA_TYPES.get(path, [None])
          for mode in ([GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if method == "POST"
                       else [GenerationMode.POSITIVE])]


@pytest.mark.parametrize(("method", "path", "media_type", "mode"), FUZZED,
                         ids=[f"{m} {p} {t or ''} {g.value}".replace("  ", " ") for m, p, t, g in FUZZED])
def test_no_5xx_and_responses_conform_to_the_schema(api_schema, method, path, media_type, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode, media_type=media_type))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        at_served_model(case)
        case.call_and_validate(checks=CHECKS)

    fuzz()


def test_every_route_documents_its_errors(api_schema):
    """Every operation that can refuse a request says so in OpenAPI, with the ErrorResponse schema."""
    raw = api_schema.raw_schema
    for path, methods in raw["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            for status in ("400", "401", "413", "415", "422", "429", "503") if path.startswith("/v1/pose") else ():
                assert status in responses, (method, path, status)
            for status, response in responses.items():
                if status.startswith(("4", "5")) and "application/json" in response.get("content", {}):
                    schema_ref = response["content"]["application/json"]["schema"]
                    documented = ("/ErrorResponse", "/HealthResponse", "/ProtocolError")  # ProtocolError: /v2
                    assert schema_ref.get("$ref", "").endswith(documented), \
                        (method, path, status, schema_ref)


def probe_operation(operation, headers: dict | None = None) -> tuple[set[int], str | None]:
    """A few generated valid requests to one operation: the statuses seen, and what did not conform (or None)."""
    statuses: set[int] = set()

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE, headers=headers))
    @settings(max_examples=3, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def probe(case):
        at_served_model(case)
        response = case.call()
        statuses.add(response.status_code)
        case.validate_response(response, checks=CHECKS[1:])  # a 503 is expected here

    try:
        probe()
    except Exception as exc:  # what did not conform
        return statuses, str(exc)[:2000]
    return statuses, None


def probe_operations(api_schema, headers: dict | None = None) -> dict[str, tuple[set[int], str | None]]:
    """probe_operation for every operation, by "METHOD path"."""
    return {f"{method} {path}": probe_operation(api_schema[path][method], headers) for method, path in OPERATIONS}


def test_refusals_without_a_key_conform_to_the_schema(tiny_onnx):
    app = create_app(Settings(model_path=tiny_onnx, api_keys="fuzz-key", auth_probes=True, intra_op_threads=1))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # /openapi.json stays open
    for label, (statuses, failure) in probe_operations(schema).items():
        assert failure is None, (label, failure)
        assert statuses == {401}, (label, statuses)


def test_refusals_while_not_ready_conform_to_the_schema(tiny_onnx):
    """A GPU provider that did not load (and no CPU fallback allowed): the service is up but not ready."""
    settings = Settings(model_path=tiny_onnx, intra_op_threads=1)
    unready = ProviderStatus("cuda", "CPUExecutionProvider", ok=False, reason="CUDA did not load")
    app = create_app(settings, model=dataclasses.replace(load_model(settings), provider_status=unready))
    results = probe_operations(schemathesis.openapi.from_asgi("/openapi.json", app))
    for label, (_, failure) in results.items():
        assert failure is None, (label, failure)
    assert {label: statuses for label, (statuses, _) in results.items()} == {
        "POST /v1/pose": {503}, "POST /v1/pose/render": {503}, "POST /v1/pose/batch": {503},
        "POST /v1/pose/video": {503}, "POST /v1/pose/video/render": {503},
        "GET /v1/model": {200}, "GET /livez": {200}, "GET /readyz": {503}, "GET /metrics": {200},
        "GET /v2": {200}, "GET /v2/health/live": {200}, "GET /v2/health/ready": {503},
        "GET /v2/models/{model_name}": {200}, "GET /v2/models/{model_name}/versions/{model_version}": {200},
        "GET /v2/models/{model_name}/ready": {503}, "GET /v2/models/{model_name}/versions/{model_version}/ready": {503},
        "GET /v2/models/{model_name}/config": {200},
        "GET /v2/models/{model_name}/versions/{model_version}/config": {200},
        "POST /v2/models/{model_name}/infer": {503},
        "POST /v2/models/{model_name}/versions/{model_version}/infer": {503},
    }
