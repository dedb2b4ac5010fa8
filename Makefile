# The two commands of README: `make serve` (fresh clone -> running service) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= serve,export,dev
MODEL ?= models/hrnet_w32_256x192.onnx
ARCH ?= w32_256x192
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install model serve test test-slow bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# Without a checkpoint this exports an UNTRAINED (random-init) model; see README "Real weights".
$(MODEL): | $(VENV)/.installed
	$(PY) -m model_export export --arch $(ARCH) --random-init --output $(MODEL)

model: $(MODEL)

serve: $(MODEL)
	$(PY) -m service --model $(MODEL) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed
	$(PY) -m pytest

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

bench: $(MODEL)
	$(PY) -m service.bench --model $(MODEL)
