# drvae: `make help` lists the targets. Every target installs what it needs first.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: help install run test test-full lint format bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install drvae in editable mode with dev extras (quick when done)

run: $(STAMP) ## The default experiment on simulated data: no rebalancing vs VAE rebalancing (runs/)
	$(BIN)/drvae -m rebalance=none,synthetic $(ARGS)

test: $(STAMP) ## The fast test suite (slow tests deselected)
	$(BIN)/pytest -q

test-full: $(STAMP) ## Every test, slow and data ones included
	$(BIN)/pytest -q -m ''

lint: $(STAMP) ## ruff lint and format check; lint-imports: the layers depend one way
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## Benchmarks -> experiments/benchmarks/RESULTS.md (about 35 min on 2 cores)
	$(BIN)/python -m drvae.bench

clean: ## Remove caches and run outputs (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
