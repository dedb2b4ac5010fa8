"""k8s/kserve: the ServingRuntime (our image, Open Inference Protocol v2) and the InferenceService using it,
rendered by kubectl kustomize and checked against kubernetes-validate (the Namespace) and KServe's own CRD schemas
(deploy/tools/kserve-crds, by deploy/tools/validate_kserve.py), plus the policies the Deployment keeps too."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache

import pytest

from tests.deploy_files import K8S_VERSIONS, drives_a_tool, kubectl, one, run, tool
from tests.helpers import ROOT

yaml = pytest.importorskip("yaml")
pytest.importorskip("jsonschema", reason="jsonschema is absent (comes with PyPI check-jsonschema)")

KSERVE = ROOT / "k8s" / "kserve"
VALIDATOR = ROOT / "deploy" / "tools" / "validate_kserve.py"
pytestmark = drives_a_tool


@cache
def rendered_text() -> str:
    result = run([kubectl(), "kustomize", str(KSERVE)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered_text()) if doc]


def validate(manifests: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(VALIDATOR)], stdin=manifests)


def test_kserve_resources_validate_against_the_kserve_crds() -> None:
    result = validate(rendered_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 valid, 0 invalid" in result.stdout, result.stdout


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_rest_validates_against_kubernetes(version: str) -> None:
    validator = tool("kubernetes-validate", "PyPI kubernetes-validate")
    result = run([validator, "--strict", "-k", version, "-"], stdin=rendered_text())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for line in output.splitlines():  # only the KServe kinds lack a built-in schema (checked above instead)
        assert line.startswith("INFO - passed") or "api version serving.kserve.io/" in line, line


def broken(edit) -> str:
    docs = rendered()
    edit(docs)
    return yaml.safe_dump_all(docs)


@pytest.mark.parametrize("edit", [
    lambda docs: one(docs, "ServingRuntime")["spec"].update(protocolVersion=["v2"]),  # unknown field (a typo)
    lambda docs: one(docs, "InferenceService")["spec"]["predictor"].update(scaleMetric="latency"),  # not in enum
    lambda docs: one(docs, "InferenceService")["spec"].pop("predictor"),  # required
    lambda docs: one(docs, "ServingRuntime")["spec"]["containers"][0]["ports"][0].update(containerPort="http"),
], ids=["unknown-field", "enum", "required", "type"])
def test_the_crd_check_can_fail(edit) -> None:
    result = validate(broken(edit))
    assert result.returncode == 1 and "1 valid, 1 invalid" in result.stdout, result.stdout + result.stderr


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_runtime_is_our_image_speaking_v2_with_probes_and_resources() -> None:
    docs = rendered()
    runtime = one(docs, "ServingRuntime")["spec"]
    assert runtime["protocolVersions"] == ["v2"] and runtime["multiModel"] is False
    container = runtime["containers"][0]
    assert container["name"] == "kserve-container"  # the name KServe merges the predictor's fields into
    # the same service image the overlays deploy, by the same kustomize image name
    deployment_image = next(i for i in yaml.safe_load((ROOT / "k8s/base/kustomization.yaml").read_text())["images"]
                            if i["name"] == "hrnet-pose")
    assert container["image"] == f"hrnet-pose:{deployment_image['newTag']}"
    env = env_of(container)
    port = int(env["POSE_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [port] and env["POSE_HOST"] == "0.0.0.0"
    assert env["POSE_MODEL_PATH"] == "/mnt/models/model.onnx"  # where KServe's storage initializer puts the model
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {k: p["path"] for k, p in probes.items()} == {"startupProbe": "/readyz", "readinessProbe": "/readyz",
                                                          "livenessProbe": "/livez"}
    assert all(p["port"] == port for p in probes.values())
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in runtime["volumes"] if v["name"] == tmp["name"])
    assert runtime["annotations"]["prometheus.kserve.io/port"] == str(port)


def test_settings_and_graceful_stop() -> None:
    sys.path.insert(0, str(ROOT))
    from service.settings import Settings

    docs = rendered()
    env = env_of(one(docs, "ServingRuntime")["spec"]["containers"][0])
    fields = {f"POSE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    defaults = Settings()
    delay = float(env.get("POSE_SHUTDOWN_DELAY_S", defaults.shutdown_delay_s))
    drain = float(env.get("POSE_SHUTDOWN_TIMEOUT_S", defaults.shutdown_timeout_s))
    predictor = one(docs, "InferenceService")["spec"]["predictor"]
    assert predictor["terminationGracePeriodSeconds"] > delay + drain


def test_inference_service_uses_the_runtime() -> None:
    docs = rendered()
    runtime = one(docs, "ServingRuntime")
    model = one(docs, "InferenceService")["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "v2"
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["storageUri"].startswith("oci://") and "hrnet-pose-model:" in model["storageUri"]
    assert all(doc["metadata"].get("namespace", "hrnet-pose") == "hrnet-pose" for doc in docs)
    assert json.dumps(docs).count("hrnet-pose:0.1.0-") == 1  # the runtime's image, nowhere else
