"""A real Prometheus scraping the real service: every PromQL expression that a user or an alert will run returns data.

The service (`python -m service`, the tiny random-init model) and Prometheus (the Debian `prometheus` binary,
installed by .ci/install-deploy-tools.sh) both listen on 127.0.0.1 only, on free ports; Prometheus scrapes every
second and evaluates deploy/prometheus/rules/*.yml every second. After a short, bounded load of real requests the
test evaluates, through Prometheus's HTTP API:

- every recording rule's expression, and the series it records;
- every alert's expression, with its comparisons turned into `bool` comparisons: an alert's condition is empty
  while the service is healthy (by design), whereas `x > bool 0.05` answers 0 or 1 for every series that the
  condition watches, which proves the selectors, labels and arithmetic match the live metrics;
- the dashboard's template-variable queries, then every panel target with $model/$instance set to the values
  those queries returned and $__rate_interval = 1m. The "GPU utilisation (DCGM)" panel alone is exempt: its metric
  comes from NVIDIA's DCGM exporter, which only exists next to a GPU;
- the prometheus-adapter rule's metricsQuery behind the HPA's custom metric.

Each must return at least one sample with a finite value. Skips (with the reason) when the prometheus binary
is absent.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, free_port, jpeg_bytes
from tests.live_server import LiveServer

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (.ci/install-deploy-tools.sh installs it)")

pytestmark = [pytest.mark.timeout(300), pytest.mark.integration]

PROMETHEUS = shutil.which("prometheus")
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pose-service.json"
ADAPTER_VALUES = ROOT / "deploy" / "prometheus-adapter" / "values.yaml"
EXEMPT_PANELS = {"GPU utilisation (DCGM)": "DCGM_FI_DEV_GPU_UTIL comes from NVIDIA's DCGM exporter, GPU hosts only"}
JOB = "pose-service"  # the job name of docker-compose's scrape config and of the k8s Service/ServiceMonitor
RATE_INTERVAL = "1m"
QUERY_RETRY_S = 15.0

if PROMETHEUS is None:
    pytest.skip("the prometheus binary is absent (Debian package `prometheus`; .ci/install-deploy-tools.sh "
                "installs it)", allow_module_level=True)


# -- PromQL helpers ------------------------------------------------------------------------------------------
COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)")


def with_bool_comparisons(expr: str) -> str:
    """`a > 0.5 and b == 0` -> `a > bool 0.5 and b == bool 0`: comparisons outside label matchers, ranges and
    strings become `bool` comparisons, which return 0/1 instead of filtering the series away."""
    out: list[str] = []
    depth = 0  # inside {...} or [...]
    quote: str | None = None
    i = 0
    while i < len(expr):
        char = expr[i]
        if quote:
            out.append(char)
            if char == "\\" and i + 1 < len(expr):
                out.append(expr[i + 1])
                i += 2
                continue
            if char == quote:
                quote = None
            i += 1
            continue
        if char in "\"'`":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif depth == 0:
            match = COMPARISON.match(expr, i)
            if match:
                operator = match.group(1)
                out.append(operator)
                i += len(operator)
                if not re.match(r"\s*bool\b", expr[i:]):
                    out.append(" bool")
                continue
        out.append(char)
        i += 1
    return "".join(out)


def test_with_bool_comparisons() -> None:
    assert with_bool_comparisons('up{job="a",x!="b"} == 0') == 'up{job="a",x!="b"} == bool 0'
    assert (with_bool_comparisons("a:r1h > (14.4 * 0.01)\nand\nb:r5m > (14.4 * 0.01)")
            == "a:r1h > bool (14.4 * 0.01)\nand\nb:r5m > bool (14.4 * 0.01)")
    assert with_bool_comparisons('x{le="0.5"}[5m] >= bool 1') == 'x{le="0.5"}[5m] >= bool 1'
    assert with_bool_comparisons('label_replace(a, "b", "<", "c", ">")') == 'label_replace(a, "b", "<", "c", ">")'


class Prometheus:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url, timeout=10)

    def query(self, expr: str) -> list[dict]:
        response = self.client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}\n-> {body}"
        return body["data"]["result"]

    def query_until_finite(self, expr: str, timeout_s: float = QUERY_RETRY_S) -> list[dict]:
        """The result once it holds a finite sample (scrapes and rule evaluations lag by a second or two)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if any(math.isfinite(float(sample["value"][1])) for sample in result):
                return result
            if time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def wait_for(self, expr: str, timeout_s: float = QUERY_RETRY_S) -> None:
        """Until `expr` (a PromQL filter such as `x >= 56`) selects something: a scrape has brought the data."""
        deadline = time.monotonic() + timeout_s
        while not self.query(expr):
            assert time.monotonic() < deadline, f"{expr}: still empty after {timeout_s} s"
            time.sleep(0.25)  # poll interval

    def get(self, path: str, **params) -> dict:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()["data"]


# -- the stack -----------------------------------------------------------------------------------------------
def scraped(prometheus: Prometheus, requests: int) -> None:
    """Until Prometheus has scraped at least `requests` answered /v1 requests."""
    prometheus.wait_for(f'sum(pose_requests_total{{job="{JOB}",endpoint=~"/v1/.*"}}) >= {requests}')


def send_load(base_url: str, prometheus: Prometheus) -> dict[int, int]:
    """A short burst of real requests: single images with 0-3 boxes, batches, renders, one corrupt image, videos.
    Concurrent, so the micro-batcher forms batches of more than one crop. Twice, the second burst once Prometheus
    has scraped the first: rates then see an increase inside their window."""
    images = [jpeg_bytes(seed=seed) for seed in range(4)]
    box_sets = [None, [[10, 20, 100, 180]], [[5, 5, 60, 120], [70, 30, 80, 200]],
                [[0, 0, 50, 100], [40, 40, 90, 190], [100, 10, 50, 120, 0.8]]]
    statuses: dict[int, int] = {}

    def single(i: int) -> int:
        files = {"image": (f"{i}.jpg", images[i % len(images)], "image/jpeg")}
        data = {} if box_sets[i % 4] is None else {"boxes": json.dumps(box_sets[i % 4])}
        return client.post("/v1/pose", files=files, data=data).status_code

    def batch(i: int) -> int:
        files = [("images", (f"{k}.jpg", images[k], "image/jpeg")) for k in range(3)]
        return client.post("/v1/pose/batch", files=files).status_code

    def render(i: int) -> int:
        return client.post("/v1/pose/render", files={"image": ("r.jpg", images[0], "image/jpeg")}).status_code

    def corrupt(i: int) -> int:
        return client.post("/v1/pose", files={"image": ("bad.jpg", b"\xff\xd8not a jpeg", "image/jpeg")}).status_code

    from tests.video_helpers import encode_video, figure_frames

    clip = encode_video(figure_frames(4))

    def video(i: int) -> int:  # the video panel's series: frames, tracks, the video stage
        return client.post("/v1/pose/video", content=clip, headers={"content-type": "video/mp4"}).status_code

    calls = [single] * 48 + [batch] * 4 + [render] * 2 + [corrupt] * 2 + [video] * 2
    with httpx.Client(base_url=base_url, timeout=30) as client, ThreadPoolExecutor(max_workers=8) as pool:
        for round_ in range(2):
            for status in pool.map(lambda pair: pair[1](pair[0]), enumerate(calls)):
                statuses[status] = statuses.get(status, 0) + 1
            scraped(prometheus, (round_ + 1) * len(calls))
    return statuses


@pytest.fixture(scope="module")
def stack(tiny_onnx: Path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prometheus")
    env = {"POSE_MAX_WAIT_MS": "5", "POSE_MAX_BATCH_SIZE": "8", "POSE_SHUTDOWN_DELAY_S": "0"}
    with LiveServer(tiny_onnx, env=env) as server:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        log_path = workdir / "prometheus.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            prometheus = Prometheus(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, f"prometheus exited:\n{log_path.read_text()[-3000:]}"
                try:
                    if prometheus.client.get("/-/ready").status_code == 200 and prometheus.query(
                            f'up{{job="{JOB}"}} == 1'):
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"prometheus not scraping:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.25)
            statuses = send_load(server.base_url, prometheus)
            assert statuses.get(200, 0) >= 100, statuses
            assert statuses.get(400, 0) >= 1, statuses  # the corrupt images: pose_errors_total{code=...}
            # the recording rules have evaluated over the scraped load (each test still retries its own query)
            prometheus.wait_for(f'job:pose_crops:rate5m{{job="{JOB}"}} > 0')
            yield prometheus, server
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def rules() -> list[dict]:
    return [rule for path in sorted(RULES_DIR.glob("*.yml"))
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def assert_finite_data(result: list[dict], what: str, expr: str) -> None:
    assert result, f"{what} returned no data:\n{expr}"
    values = [float(sample["value"][1]) for sample in result]
    assert any(math.isfinite(v) for v in values), f"{what} returned only {values}:\n{expr}"


# -- the tests -----------------------------------------------------------------------------------------------
def test_rules_load_and_evaluate_healthy(stack) -> None:
    prometheus, _ = stack
    groups = prometheus.get("/api/v1/rules")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    expected = {rule.get("record") or rule["alert"] for rule in rules()}
    assert expected <= set(loaded), f"not loaded: {expected - set(loaded)}"
    unhealthy = {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"}
    assert not unhealthy, unhealthy


@pytest.mark.parametrize("rule", [r for r in rules() if "record" in r], ids=lambda r: r["record"])
def test_recording_rule_returns_data(stack, rule) -> None:
    prometheus, _ = stack
    assert_finite_data(prometheus.query_until_finite(rule["expr"]), f"recording rule {rule['record']}", rule["expr"])
    # and Prometheus itself records the series
    assert_finite_data(prometheus.query_until_finite(rule["record"]), f"recorded series {rule['record']}",
                       rule["record"])


@pytest.mark.parametrize("rule", [r for r in rules() if "alert" in r], ids=lambda r: r["alert"])
def test_alert_expression_watches_live_series(stack, rule) -> None:
    prometheus, _ = stack
    prometheus.query(rule["expr"])  # valid as written (empty while healthy: that is the point of an alert)
    expr = with_bool_comparisons(rule["expr"])
    assert " bool" in expr, f"{rule['alert']} has no comparison: {rule['expr']}"
    assert_finite_data(prometheus.query_until_finite(expr), f"alert {rule['alert']}", expr)


def test_untrained_model_alert_fires(stack) -> None:
    """End to end through the rule engine: the tiny test model is random-init, so PoseModelUntrained fires."""
    prometheus, server = stack
    deadline = time.monotonic() + QUERY_RETRY_S
    while True:
        firing = [a for a in prometheus.get("/api/v1/alerts")["alerts"]
                  if a["labels"]["alertname"] == "PoseModelUntrained" and a["state"] == "firing"]
        if firing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert firing, prometheus.get("/api/v1/alerts")
    assert firing[0]["labels"]["instance"] == f"127.0.0.1:{server.port}"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"]
            for target in panel.get("targets", []) if target.get("expr")]


@pytest.fixture(scope="module")
def variables(stack) -> dict[str, str]:
    """Resolve the dashboard's template variables the way Grafana does (label_values(metric{...}, label))."""
    prometheus, server = stack
    resolved: dict[str, str] = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, f"unexpected variable query {query!r}"
        selector, label = match.groups()
        for name, value in resolved.items():
            selector = selector.replace(f"${name}", value)
        values = prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": selector})
        assert values, f"variable ${variable['name']}: {query} returned no values"
        resolved[variable["name"]] = "|".join(grafana_regex_escape(v) for v in values)
    assert f"127.0.0.1:{server.port}" in resolved["instance"].replace("\\", "")
    return resolved


def grafana_regex_escape(value: str) -> str:
    """A multi-value variable as Grafana puts it into a Prometheus regex matcher: regex metacharacters escaped
    with a backslash, itself escaped for the PromQL string (127.0.0.1 -> 127\\\\.0\\\\.0\\\\.1)."""
    return "".join("\\\\" + char if char in r"\^$.|?*+()[]{}" else char for char in value)


def substitute(expr: str, variables: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", "15s").replace("$__range", "5m")
    for name, value in sorted(variables.items(), key=lambda item: -len(item[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unresolved variable in {expr}"
    return expr


@pytest.mark.parametrize("title, expr", dashboard_targets(), ids=[f"{t}: {e[:40]}" for t, e in dashboard_targets()])
def test_dashboard_target_returns_data(stack, variables, title, expr) -> None:
    prometheus, _ = stack
    query = substitute(expr, variables)
    if title in EXEMPT_PANELS:
        prometheus.query(query)  # valid PromQL; no data without a DCGM exporter
        pytest.skip(f"{title}: {EXEMPT_PANELS[title]}")
    assert_finite_data(prometheus.query_until_finite(query), f"panel {title!r}", query)


def test_hpa_custom_metric_query_returns_data(stack) -> None:
    """prometheus-adapter's metricsQuery for pose_inflight_crops, with the adapter's template filled in as it
    would for one pod (LabelMatchers) grouped by pod (here: by instance, the label this plain setup has)."""
    prometheus, _ = stack
    rule = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"][0]
    metric = re.match(r"\s*(\w+)", rule["seriesQuery"]).group(1)
    query = (rule["metricsQuery"].replace("<<.Series>>", metric)
             .replace("<<.LabelMatchers>>", f'job="{JOB}"').replace("<<.GroupBy>>", "instance"))
    assert_finite_data(prometheus.query_until_finite(query), "prometheus-adapter metricsQuery", query)
