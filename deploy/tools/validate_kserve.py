"""Validates KServe custom resources (ServingRuntime, InferenceService) against KServe's own CRD schemas.

kubernetes-validate bundles only the built-in Kubernetes schemas, so these kinds are checked here, against the
CRDs in deploy/tools/kserve-crds/ (KServe v0.20.0, see its README). As `kubectl apply --validate=strict` would,
an unknown field is an error: every object schema that lists its properties and does not say
x-kubernetes-preserve-unknown-fields gets additionalProperties: false.

    kubectl kustomize k8s/kserve | python deploy/tools/validate_kserve.py
Exit 0 when every serving.kserve.io object validates, 1 otherwise; other objects are skipped.
"""

from __future__ import annotations

import gzip
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parent / "kserve-crds"
GROUP = "serving.kserve.io"
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the libyaml parser: the CRDs are 2 MB of YAML


def strict(schema: Any) -> Any:
    """The CRD's OpenAPI v3 schema as a JSON Schema that refuses unknown fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if ("properties" in result and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")):
        result["additionalProperties"] = False
    return result


@cache
def schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the strict schema of that served version."""
    found: dict[tuple[str, str], dict] = {}
    for path in sorted(CRD_DIR.glob("*.yaml.gz")):
        crd = yaml.load(gzip.decompress(path.read_bytes()), Loader=SAFE_LOADER)
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                api_version = f"{crd['spec']['group']}/{version['name']}"
                schema = strict(version["schema"]["openAPIV3Schema"])
                # apiVersion/kind/metadata are the API server's; the CRD only types metadata as an object
                found[(api_version, kind)] = schema
    return found


def errors(obj: dict) -> list[str]:
    schema = schemas().get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if schema is None:
        return [f"no KServe CRD schema for {obj.get('apiVersion')} {obj.get('kind')}"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


def main() -> int:
    objects = [doc for doc in yaml.safe_load_all(sys.stdin) if doc]
    valid = invalid = 0
    for obj in objects:
        if not str(obj.get("apiVersion", "")).startswith(GROUP + "/"):
            continue
        name = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
        found = errors(obj)
        if found:
            invalid += 1
            for error in found:
                print(f"FAIL {name}: {error}")
        else:
            valid += 1
            print(f"ok   {name} ({obj['apiVersion']})")
    print(f"{valid} valid, {invalid} invalid")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
