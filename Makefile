# The two commands of README: `make serve` (fresh clone -> running service) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= serve,export,dev
ARCH ?= w32_256x192
# With CHECKPOINT=path/to/pose_hrnet_w32_256x192.pth the served model is exported from those weights;
# without it, from a random init (an UNTRAINED model).
CHECKPOINT ?=
ifeq ($(CHECKPOINT),)
MODEL ?= models/hrnet_$(ARCH).onnx
WEIGHTS := --random-init
else
MODEL ?= models/$(basename $(notdir $(CHECKPOINT))).onnx
WEIGHTS := --checkpoint $(CHECKPOINT)
endif
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install model serve test test-slow bench lint typecheck

$(VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[$(EXTRAS)]'
	$(PY) -m pip install -e ./client  # pose_client: its own package (httpx only), tested with the service
	touch $@

install: $(VENV)/.installed

$(MODEL): | $(VENV)/.installed
	$(PY) -m model_export export --arch $(ARCH) $(WEIGHTS) --output $(MODEL)

model: $(MODEL)

serve: $(VENV)/.installed $(MODEL)
	$(PY) -m service --model $(MODEL) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed
	$(PY) -m pytest

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
