"""The Kubernetes manifests, as kubectl kustomize renders each overlay: validated against the Kubernetes schemas
(kubernetes-validate) and prometheus-operator's CRD schemas, and the policies the Deployment, Service, HPA, PDB
and monitoring resources must keep. Tools as in tests/test_deploy_static.py; each test skips without its tool."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.deploy_files import (
    ADAPTER_VALUES,
    DEPLOY_TOOLS_DIR,
    INSTALL_HINT,
    JOB,
    K8S_VERSIONS,
    OVERLAYS,
    RULES_DIR,
    VENV_BIN,
    drives_a_tool,
    kubectl,
    load_yaml,
    one,
    pod_spec,
    rendered,
    rendered_text,
    run,
    service_metric_names,
    tool,
    yaml,
)
from tests.helpers import ROOT


# -- Kubernetes ----------------------------------------------------------------------------------------------------
@drives_a_tool
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_output_validates(overlay: str, version: str) -> None:
    validator = tool("kubernetes-validate", "PyPI kubernetes-validate")
    manifests = rendered_text(overlay)
    result = run([validator, "--strict", "-k", version, "-"], stdin=manifests)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # kubernetes-validate only warns for kinds it has no schema for: those must be the prometheus-operator
    # custom resources, which test_custom_resources_validate checks against their CRD schemas.
    for line in output.splitlines():
        if line.startswith("WARN"):
            assert "api version monitoring.coreos.com/v1" in line, line
        else:
            assert line.startswith("INFO - passed"), line
    passed = sum(line.startswith("INFO - passed") for line in output.splitlines())
    assert passed == len([d for d in rendered(overlay) if not d["apiVersion"].startswith("monitoring.coreos.com")])


@drives_a_tool
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate(overlay: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"node is absent (Debian nodejs); {INSTALL_HINT}")
    package = DEPLOY_TOOLS_DIR / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    if not package.exists():
        pytest.skip(f"{package} is absent (npm @kubernetes-models/prometheus-operator); {INSTALL_HINT}")
    docs = rendered(overlay)
    result = run([node, str(ROOT / "deploy" / "tools" / "validate-crds.mjs"), str(DEPLOY_TOOLS_DIR)],
                 stdin=json.dumps(docs))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 valid, 0 invalid" in result.stdout, result.stdout  # the ServiceMonitor and the PrometheusRule


@drives_a_tool
def test_crd_validator_rejects_a_broken_resource() -> None:
    """The CRD check can fail: a ServiceMonitor with a malformed interval and a rule without expr are refused."""
    node = shutil.which("node")
    package = DEPLOY_TOOLS_DIR / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    if node is None or not package.exists():
        pytest.skip(f"node or the CRD schemas are absent; {INSTALL_HINT}")
    broken = [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
         "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": "every 15 seconds"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "y"},
         "spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}},
    ]
    result = run([node, str(ROOT / "deploy" / "tools" / "validate-crds.mjs"), str(DEPLOY_TOOLS_DIR)],
                 stdin=json.dumps(broken))
    assert result.returncode == 1 and "0 valid, 2 invalid" in result.stdout, result.stdout + result.stderr


@drives_a_tool
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_policies(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = one(docs, "Deployment")
    spec = pod_spec(docs)
    assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    containers = {c["name"]: c for c in spec["containers"]}
    service_container = containers["pose-service"]
    for container in spec["containers"] + spec.get("initContainers", []):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
        assert not container["image"].endswith(":latest") and ":" in container["image"], container["image"]
    # probes: startup and readiness on /readyz, liveness on /livez, with a start-up budget for the warm-up
    probes = {kind: service_container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/livez"
    budget_s = probes["startupProbe"]["failureThreshold"] * probes["startupProbe"]["periodSeconds"]
    assert budget_s >= (300 if overlay == "gpu" else 120), budget_s
    ports = {p["name"]: p["containerPort"] for p in service_container["ports"]}
    for probe in probes.values():
        assert probe["httpGet"]["port"] in ports
    # writable /tmp on an emptyDir (the root filesystem is read-only); the model on a read-only volume
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in service_container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    config = one(docs, "ConfigMap")["data"]
    model_dir = str(Path(config["POSE_MODEL_PATH"]).parent)
    assert mounts[model_dir]["readOnly"] is True
    # model delivery: the init container copies the model image's /models into that same volume
    init = next(c for c in spec["initContainers"] if c["name"] == "model")
    init_mount = next(m for m in init["volumeMounts"] if m["name"] == mounts[model_dir]["name"])
    assert init["command"][-1].rstrip("/") == init_mount["mountPath"] and "hrnet-pose-model" in init["image"]
    # graceful stop: the service's own drain (unready for the delay, then in-flight requests finish) fits
    grace_s = spec["terminationGracePeriodSeconds"]
    assert grace_s > float(config["POSE_SHUTDOWN_DELAY_S"]) + float(config["POSE_SHUTDOWN_TIMEOUT_S"]), grace_s
    # env: the generated ConfigMap, every key a real setting
    assert service_container["envFrom"][0]["configMapRef"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    if overlay == "gpu":
        assert service_container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert service_container["image"].endswith("-gpu")
        assert config["POSE_PROVIDER"] == "cuda"
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    else:
        assert "nvidia.com/gpu" not in json.dumps(service_container["resources"])
        assert service_container["image"].endswith("-cpu")
        assert config["POSE_PROVIDER"] == "cpu"


@drives_a_tool
def test_baked_model_component_drops_the_init_container(tmp_path: Path) -> None:
    """The documented alternative: the model baked into the service image, no init container, no volume."""
    k8s = os.path.relpath(ROOT / "k8s", tmp_path)  # kustomize refuses absolute paths
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{k8s}/overlays/gpu"], "components": [f"{k8s}/components/baked-model"]}))
    result = run([kubectl(), "kustomize", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    spec = pod_spec(docs)
    assert not spec.get("initContainers")
    assert "models" not in {v["name"] for v in spec["volumes"]}
    assert "/models" not in {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert one(docs, "ConfigMap")["data"]["POSE_MODEL_PATH"] == "/models/model.onnx"  # the image's own copy
    validator = shutil.which("kubernetes-validate") or str(VENV_BIN / "kubernetes-validate")
    if Path(validator).exists():
        checked = run([validator, "--strict", "--quiet", "-"], stdin=result.stdout)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@drives_a_tool
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_keys_are_settings(overlay: str) -> None:
    sys.path.insert(0, str(ROOT))
    from service.settings import Settings

    fields = {f"POSE_{name.upper()}" for name in Settings.model_fields}
    config = one(rendered(overlay), "ConfigMap")["data"]
    assert set(config) <= fields, set(config) - fields
    assert config["POSE_HOST"] == "0.0.0.0"
    env_names = {e["name"] for e in pod_spec(rendered(overlay))["containers"][0].get("env", [])}
    assert env_names <= fields, env_names - fields


@drives_a_tool
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_hpa_pdb_and_monitoring_match_the_pods(overlay: str) -> None:
    docs = rendered(overlay)
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    container = pod_spec(docs)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    def selects(selector: dict) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    service = one(docs, "Service")
    assert service["metadata"]["name"] == JOB  # the job label of the scraped metrics (rules: PoseTargetDown)
    assert selects(service["spec"]["selector"])
    assert service["spec"]["ports"][0]["targetPort"] in ports

    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": one(docs, "Deployment")["metadata"]["name"]}
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "pose_inflight_crops"
    assert "pose_inflight_crops" in service_metric_names()
    adapter = load_yaml(ADAPTER_VALUES)["rules"]["custom"][0]
    assert adapter["name"]["as"] == "pose_inflight_crops" and adapter["seriesQuery"].startswith("pose_inflight_crops")

    pdb = one(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"])
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]

    monitor = one(docs, "ServiceMonitor")
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"


@drives_a_tool
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheusrule_equals_the_prometheus_rules(overlay: str) -> None:
    groups = [group for path in sorted(RULES_DIR.glob("*.yml")) for group in load_yaml(path)["groups"]]
    rule = one(rendered(overlay), "PrometheusRule")
    assert rule["spec"]["groups"] == groups, ("k8s/base/prometheusrule.yaml drifted from deploy/prometheus/rules: "
                                              "run python deploy/prometheus/sync_k8s_rules.py")


def test_prometheusrule_file_is_regenerated() -> None:
    result = run([sys.executable, str(ROOT / "deploy" / "prometheus" / "sync_k8s_rules.py"), "--check"])
    assert result.returncode == 0, result.stderr
