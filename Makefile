# The README's commands. Each target sets up what it needs itself.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= data

.PHONY: serve test test-fast lint format bench screenshots docker docker-test chromium clean

# The editable install also compiles the probe's C kernels (setup.py, an optional extension:
# without a C compiler it goes on without them); editing them re-runs it.
KERNELS := $(wildcard backend/depthscope/probe/backends/*.c backend/depthscope/probe/backends/*.h)

$(STAMP): pyproject.toml setup.py $(KERNELS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m depthscope.probe.backends.kernels  # which backend the probe takes, and why
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/depthscope serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# Browser tests drive Debian's Chromium (Playwright's own browser download cannot work here).
chromium:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) chromium
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not browser and not slow and not server"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) chromium
	$(PY) bench/overhead.py
	$(PY) bench/overhead.py --tensor-ops
	$(PY) bench/service.py
	$(PY) bench/stream.py
	$(PY) bench/render.py
	$(PY) bench/load.py
	$(PY) bench/budget.py
	$(PY) bench/tables.py --readme

screenshots: $(STAMP) chromium
	$(PY) -m pytest tests/e2e --screenshots-dir docs/screenshots

docker:
	docker build -t depthscope .

docker-test:
	bash scripts/docker-test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
