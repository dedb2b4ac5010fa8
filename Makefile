# The two commands of README: `make serve` (fresh clone -> running service) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= serve,export,dev
ARCH ?= w32_256x192
# Where the served model's weights come from (the first one given wins):
#   WEIGHTS=hrnet_w32_coco_256x192   official weights by registry name (`python -m model_export fetch --list`):
#                                    downloaded (or taken from the cache), sha256-verified, exported;
#                                    FETCH_ARGS passes more, e.g. FETCH_ARGS="--from-file ~/Downloads/x.pth";
#   CHECKPOINT=path/to/weights.pth   a checkpoint file you have, exported with ARCH;
#   neither                          a random init: an UNTRAINED model (meaningless keypoints).
WEIGHTS ?=
CHECKPOINT ?=
FETCH_ARGS ?=
ifneq ($(WEIGHTS),)
MODEL ?= models/$(WEIGHTS).onnx
MAKE_MODEL = fetch $(WEIGHTS) $(FETCH_ARGS) --output $(MODEL)
else ifneq ($(CHECKPOINT),)
MODEL ?= models/$(basename $(notdir $(CHECKPOINT))).onnx
MAKE_MODEL = export --arch $(ARCH) --checkpoint $(CHECKPOINT) --output $(MODEL)
else
MODEL ?= models/hrnet_$(ARCH).onnx
MAKE_MODEL = export --arch $(ARCH) --random-init --output $(MODEL)
endif
# The person detector for photos sent without boxes (optional):
#   DETECTOR=yolox_s_8x8_300e_coco      a registry name (kind detector): fetched, verified, exported to
#                                       models/NAME.onnx + its detector card; DETECTOR_FETCH_ARGS passes more;
#   DETECTOR=path/to/detector.onnx      a detector ONNX you have (its card NAME.json beside it);
#   unset                               no detector: a request without boxes is one person, the whole image.
DETECTOR ?=
DETECTOR_FETCH_ARGS ?=
ifneq ($(filter %.onnx,$(DETECTOR)),)
DETECTOR_MODEL := $(DETECTOR)
else ifneq ($(DETECTOR),)
DETECTOR_MODEL := models/$(DETECTOR).onnx
endif
SERVE_DETECTOR := $(if $(DETECTOR_MODEL),--detector $(DETECTOR_MODEL),)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install model detector serve test test-fast test-slow test-tools bench lint typecheck lock test-image

$(VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[$(EXTRAS)]'
	$(PY) -m pip install -e ./client  # pose_client: its own package (httpx only), tested with the service
	touch $@

install: $(VENV)/.installed

$(MODEL): | $(VENV)/.installed
	$(PY) -m model_export $(MAKE_MODEL)

model: $(MODEL)

ifneq ($(DETECTOR),)
ifeq ($(filter %.onnx,$(DETECTOR)),)
$(DETECTOR_MODEL): | $(VENV)/.installed
	$(PY) -m model_export fetch $(DETECTOR) $(DETECTOR_FETCH_ARGS) --output $(DETECTOR_MODEL)
else
$(DETECTOR_MODEL):
	@echo "DETECTOR=$(DETECTOR): no such file (give a detector ONNX path or a registry name)" >&2; exit 1
endif
endif

detector: $(DETECTOR_MODEL)

serve: $(VENV)/.installed $(MODEL) $(DETECTOR_MODEL)
	$(PY) -m service --model $(MODEL) $(SERVE_DETECTOR) --host $(HOST) --port $(PORT)

# The system tools the full suite drives for real: Chromium (the browser test), Prometheus and promtool,
# docker-compose, yamllint, hadolint, kubectl, the CRD schemas. As root (CI, a fresh container) `make test`
# installs whatever is missing; each script checks first, so this costs a second when all is there. Not as
# root, those tests skip, and pytest's summary names each one and why.
test-tools: $(VENV)/.installed
	@if [ "$$(id -u)" = 0 ]; then \
		bash .ci/install-deploy-tools.sh && bash .ci/install-test-tools.sh; \
	else \
		echo "test-tools: not root, nothing installed; tests whose tools are missing will skip with the reason"; \
	fi

# Everything but `slow` (README's test command). Skips only what cannot run here (e.g. GPU-only checks).
test: $(VENV)/.installed test-tools
	$(PY) -m pytest

# Unit and in-process tests (a couple of minutes, no root, no system tools): no live server processes,
# browser, Prometheus, deploy tools or training (the `integration` marker).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow and not integration"

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

# Lint rules only (ruff's formatter is not adopted); configuration in pyproject.toml's [tool.ruff].
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# mypy over service/ and model_export/ ([tool.mypy] in pyproject.toml names the files).
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

bench: $(VENV)/.installed $(MODEL)
	$(PY) -m service.bench --model $(MODEL)


# The images' pinned dependencies (docker/requirements/*.txt, with sha256 hashes), from pyproject.toml's extras:
# serve.txt (CPU runtime, Python 3.11), export.txt (export stage: serve + export, torch 2.13.0+cpu from the PyTorch
# CPU index), serve-gpu.txt (GPU runtime, Ubuntu 24.04's Python 3.12; onnxruntime-gpu pinned by gpu.in). Existing
# pins are kept unless pyproject.toml asks otherwise; LOCK_ARGS=--upgrade moves every pin to the newest release.
# The tests check that the files agree with pyproject.toml (tests/test_lock.py). The venv of `make install` does
# not use them.
LOCK_DIR := docker/requirements
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
LOCK_ARGS ?=
LOCK_PLATFORM ?= x86_64-manylinux_2_28
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --python-platform $(LOCK_PLATFORM) --generate-hashes --no-python-downloads \
	--no-emit-index-url --no-emit-find-links --custom-compile-command "make lock" $(LOCK_ARGS)

lock: $(VENV)/.installed
	$(UV_COMPILE) --python-version 3.11 --extra serve -o $(LOCK_DIR)/serve.txt
	$(UV_COMPILE) --python-version 3.11 --extra serve --extra export -c $(LOCK_DIR)/serve.txt \
		--extra-index-url $(TORCH_INDEX_URL) --index-strategy unsafe-best-match -o $(LOCK_DIR)/export.txt
	$(UV_COMPILE) --python-version 3.12 --extra serve-gpu -c $(LOCK_DIR)/serve.txt -c $(LOCK_DIR)/gpu.in \
		-o $(LOCK_DIR)/serve-gpu.txt
	$(PY) docker/lockcheck.py

# Builds the CPU image and checks it as a container with the compose hardening (docker/test-image.sh): ready in
# time, the README request, /metrics, the HEALTHCHECK, a graceful stop. Skips (exit 0, "SKIPPED") without Docker.
test-image:
	bash docker/test-image.sh
