# infleet: every target sets up what it needs (venv, dependencies, sandbox binaries).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: venv lint types contracts crds crds-check unit test test-unit e2e demo bench sandbox-bins image clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: venv
	$(BIN)/mypy

contracts: venv
	cd operator && ../$(BIN)/lint-imports --config ../.importlinter

crds: venv
	$(BIN)/infleet crds generate

crds-check: venv
	$(BIN)/infleet crds generate --check

static: lint types contracts crds-check

sandbox-bins:
	bash hack/build.sh
	bash hack/monitoring-crds.sh

# Unit and contract tests only: no cluster needed.
test-unit: static
	$(BIN)/pytest tests/unit tests/contract $(PYTEST_ARGS)

# Everything: static checks, unit, contract and e2e on the sandbox (built or reused).
test: static sandbox-bins
	$(BIN)/pytest tests $(PYTEST_ARGS)

# Sandbox up, examples applied, the operator printing the fleet as it converges; Ctrl-C stops
# the operator (`infleet sandbox down` stops the sandbox).
# The demo plans from the examples' traffic priors; `sandbox env` also exports the sandbox's
# Prometheus URL, which would switch `infleet run` to live metrics (no load is set here).
demo: venv sandbox-bins
	@$(BIN)/infleet plan -f examples/
	@$(BIN)/infleet sandbox up >/dev/null && eval "$$($(BIN)/infleet sandbox env)" && \
	  kubectl create namespace llm --dry-run=client -o yaml | kubectl apply -f - && \
	  kubectl apply --server-side -f examples/ && \
	  exec env -u INFLEET_PROMETHEUS_URL $(BIN)/infleet run --interval 5 --show-fleet --metrics-port 0

# The operator image; needs a Docker engine (docs/install.md). IMAGE=repo:tag to name it.
IMAGE ?= infleet:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image: no 'docker' command on this machine; build the image where a Docker engine exists (docs/install.md)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: 'docker' cannot reach a Docker engine (is the daemon running?); build the image where one exists (docs/install.md)" >&2; exit 1; }
	docker build -t $(IMAGE) .

bench: venv
	$(BIN)/python bench/planner.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
