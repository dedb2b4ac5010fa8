#!/usr/bin/env bash
# What the hardening and browser tests need beyond the venv's dev extra, on a clean Debian machine as root:
#   - Debian's chromium (tests/test_page_browser.py drives GET / in it through Playwright, with
#     executable_path=/usr/bin/chromium; Playwright's own browser download is never used);
#   - the Python test packages (schemathesis, playwright, ...) in .venv, in case the venv predates them
#     (they are also in pyproject's `dev` extra, which `make install` installs).
# Idempotent and cheap when everything is there already (`make test` runs it every time).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
if ! command -v /usr/bin/chromium >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends chromium fonts-dejavu-core
fi
/usr/bin/chromium --version

PIP=.venv/bin/pip
if [ ! -x "$PIP" ]; then
  echo "install-test-tools: $PIP is missing; run 'make install' first" >&2
  exit 1
fi
# Only the Python driver: never `playwright install` (it downloads a browser build; we use Debian's).
if ! .venv/bin/python -c "import schemathesis, playwright.sync_api, hypothesis" 2>/dev/null; then
  "$PIP" install --quiet "schemathesis>=4.0" "playwright>=1.45" "hypothesis>=6.100"
fi
