# Every step of the pipeline is one target here; Jenkins stages and the README call these.
# `make` creates the virtual environment and installs the locked dependencies by itself.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed-stamp

export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help install lint test test-unit test-data test-model test-integration ingest validate train gate \
        promote demo bench bench-train clean clean-state

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install the locked dependencies

lint: $(STAMP) ## ruff (and the stack's validators)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) ## the whole test suite (starts or installs the servers it needs)
	$(BIN)/pytest

test-unit: $(STAMP) ## unit tests only
	$(BIN)/pytest tests/unit
test-data: $(STAMP) ## data tests only
	$(BIN)/pytest tests/data
test-model: $(STAMP) ## model behaviour tests only
	$(BIN)/pytest tests/model
test-integration: $(STAMP) ## integration tests (real MLflow, PostgreSQL, S3 servers)
	$(BIN)/pytest tests/integration

ingest: $(STAMP) ## snapshot the data source (content-hashed, immutable)
	$(PY) -m training.data ingest

validate: ingest ## validate the latest snapshot against the declared schema
	$(PY) -m training.validate

train: validate ## train baseline + tuned XGBoost, log to MLflow, register as 'challenger'
	$(PY) -m training.train

gate: $(STAMP) ## judge 'challenger' against floors, 'champion', behaviour, latency; promote on pass
	$(PY) -m training.gate

demo: $(STAMP) ## the main job on the embedded default
	$(PY) -m scripts.demo

bench: bench-train ## every benchmark; tables go to docs/benchmarks.md

bench-train: $(STAMP) ## training wall time and peak memory -> docs/benchmarks.md
	$(PY) -m scripts.bench_train

clean-state: ## delete the embedded default's state (var/): snapshots, MLflow store, logs
	rm -rf var

clean: clean-state ## also delete the virtual environment
	rm -rf $(VENV)
