# The two commands of the README: `make demo` and `make test`. Each creates/updates .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# cell-eval's own environment (pdex needs numpy>=2.4.2, Cellpose caps numpy<2.1): the eval rule runs in it;
# it also holds crispat, the reference guide caller tests/test_rna_guides.py compares with
EVAL_VENV := .venv-eval
EVAL_STAMP := $(EVAL_VENV)/.installed
CORES ?= 2

.PHONY: env demo test lint clean-demo

env: $(STAMP) $(EVAL_STAMP)

$(STAMP): pyproject.toml envs/requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0            # first, alone: an unpinned torch pulls CUDA wheels
	$(BIN)/python -m pip install -q -c envs/requirements.lock -e ".[test]"
	$(BIN)/python -m pip check
	@touch $@

$(EVAL_STAMP): envs/celleval.lock
	@test -x $(EVAL_VENV)/bin/python || $(PYTHON) -m venv $(EVAL_VENV)
	$(EVAL_VENV)/bin/python -m pip install -q --upgrade pip
	$(EVAL_VENV)/bin/python -m pip install -q torch==2.13.0       # first, alone (crispat's pyro needs torch)
	$(EVAL_VENV)/bin/python -m pip install -q -c envs/celleval.lock cell-eval==0.8.2 crispat==0.9.11 torch==2.13.0
	$(EVAL_VENV)/bin/python -m pip check
	@touch $@

# Simulate the demo screen (if absent) and run the whole workflow on it: demo/results/paired/perturbations.h5mu
demo: env
	@test -f demo/config/config.yaml || $(BIN)/pairedscreen simulate --preset demo --out demo
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --directory demo --cores $(CORES)

test: env
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/python -m pytest -q tests/test_workflow_lint.py

clean-demo:
	rm -rf demo
