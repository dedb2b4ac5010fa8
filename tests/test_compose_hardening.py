"""What a real container run found (issue 21) and the files now keep: compose's stop grace period covers the
service's own shutdown, ports are published on 127.0.0.1 unless PUBLISH_ADDR opens them, compose's build args
exist in the Dockerfile, and docs/deploy.md says what the build needs (BuildKit, registries or mirrors) and runs
`docker run` with a stop timeout."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.deploy_files import COMPOSE, COMPOSE_GPU, drives_a_tool, load_yaml, tool, yaml
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "deploy.md").read_text()


def seconds(duration: str) -> float:
    """A compose duration ('45s', '1m30s')."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    return 60 * int(parts.group(1) or 0) + int(parts.group(2) or 0)


def shutdown_budget_s(environment: dict[str, str]) -> float:
    """The service's own stop: unready for the delay, then the drain timeout (its settings, else their defaults)."""
    sys.path.insert(0, str(ROOT))
    from service.settings import Settings

    defaults = Settings()
    delay = float(environment.get("POSE_SHUTDOWN_DELAY_S", defaults.shutdown_delay_s))
    drain = float(environment.get("POSE_SHUTDOWN_TIMEOUT_S", defaults.shutdown_timeout_s))
    return delay + drain


def test_compose_grace_period_covers_the_service_shutdown() -> None:
    pose = load_yaml(COMPOSE)["services"]["pose"]
    grace = seconds(pose["stop_grace_period"])
    assert grace > shutdown_budget_s(pose["environment"]), grace  # Docker's default 10 s cut requests short
    assert shutdown_budget_s({}) >= 35  # the defaults the check falls back to are the settings' own
    gpu = load_yaml(COMPOSE_GPU)["services"]["pose"]
    assert "stop_grace_period" not in gpu or seconds(gpu["stop_grace_period"]) >= grace


def test_docs_docker_run_has_a_stop_timeout() -> None:
    grace = seconds(load_yaml(COMPOSE)["services"]["pose"]["stop_grace_period"])
    runs = [line for line in DOC.splitlines() if re.match(r"\s*docker run\b", line)]
    assert runs
    for line in runs:
        timeout = re.search(r"--stop-timeout[ =](\d+)", line)
        assert timeout and int(timeout.group(1)) >= grace, line


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_ports_are_published_on_loopback_by_default(path) -> None:
    for name, service in load_yaml(path)["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${PUBLISH_ADDR:-127.0.0.1}:"), (name, port)


@drives_a_tool
@pytest.mark.parametrize("address", [None, "0.0.0.0"])
def test_publish_addr_renders(address: str | None) -> None:
    """docker-compose itself renders the addresses: 127.0.0.1 by default, PUBLISH_ADDR when set."""
    compose = tool("docker-compose", "Debian docker-compose")
    env = {k: v for k, v in os.environ.items() if k != "PUBLISH_ADDR"} | ({"PUBLISH_ADDR": address} if address else {})
    result = subprocess.run([compose, "-f", str(COMPOSE), "-f", str(COMPOSE_GPU), "config"], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)["services"]
    expected = address or "127.0.0.1"
    ports = [port for service in rendered.values() for port in service.get("ports", [])]
    assert len(ports) == 4  # pose, prometheus, grafana, dcgm-exporter
    for port in ports:
        host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
        assert host_ip == expected, port


def test_compose_build_args_are_dockerfile_args() -> None:
    for path in (COMPOSE, COMPOSE_GPU):
        build = load_yaml(path)["services"]["pose"].get("build", {})
        dockerfile = (ROOT / build.get("dockerfile", "docker/Dockerfile.cpu")).read_text()
        declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
        assert set(build.get("args") or load_yaml(COMPOSE)["services"]["pose"]["build"]["args"]) <= declared


def test_docs_state_what_the_build_needs() -> None:
    assert "1.28 or newer" not in DOC and "v1 (1.28" not in DOC  # compose v1's default builder has no BuildKit
    assert "BuildKit" in DOC and "COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=1" in DOC
    assert "without internet access can" not in DOC  # the build needs package indexes and base images
    for needle in ("PIP_INDEX_URL", "TORCH_INDEX_URL", "--secret id=ca_bundle", "PUBLISH_ADDR", "make lock",
                   "make test-image", "DETECTOR", "k8s/kserve", "scale to zero"):
        assert needle in DOC, needle
    compose_header = COMPOSE.read_text().split("services:")[0]
    assert "1.28 or newer" not in compose_header and "BuildKit" in compose_header


def test_small_truths() -> None:
    prometheus = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert "profile" not in prometheus and "docker/compose.gpu.yml" in prometheus  # an override file, no profile
    deployment = load_yaml(ROOT / "k8s" / "base" / "deployment.yaml")
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]["command"]
    copy = " ".join(init[:2])  # `cp -R`: -a would try to keep root ownership as uid 10001
    assert copy == "cp -R" and f"`{copy} /models/." in (ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert "cp -a" not in DOC
