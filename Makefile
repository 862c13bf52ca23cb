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
.PHONY: help install system-packages lint test test-unit test-data test-model test-integration ingest validate train gate \
        settings-doc model-card demo demo-late-labels monitor retrain retrain-scheduled simulate rollback history retention backup restore bench bench-train bench-serve mlserver-venv bench-drift bench-estimate bench-shadow bench-slow-clients serve clean clean-state \
        score install-spark bench-score bench-retention bench-soak bench-tails

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing the locked dependencies into $(VENV) (about 3 minutes the first time)"
	@$(BIN)/pip install --quiet --upgrade pip
	@$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	@echo "installed $$($(BIN)/pip list --format=freeze | wc -l) packages"
	@touch $@

system-packages: ## the Debian packages the tests and the stack validators run (installs them as root)
	@tools/system_packages.sh

install: $(STAMP) ## create .venv and install the locked dependencies

SPARK_STAMP := $(VENV)/.spark-stamp
$(SPARK_STAMP): $(STAMP)
	@echo "installing the spark extra (pyspark, about 450 MB) into $(VENV)"
	@$(BIN)/pip install --quiet -c requirements.lock -e '.[dev,spark]'
	@touch $@

install-spark: $(SPARK_STAMP) ## pyspark (the `spark` extra) and a Java runtime (Debian) for `make score ENGINE=spark`
	@command -v java >/dev/null 2>&1 || tools/system_packages.sh

lint: $(STAMP) system-packages ## ruff, import contracts (packages stand on core/), the stack's validators
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory validate-stack

test: $(STAMP) system-packages ## the whole test suite (installs the Debian packages it runs as root; starts its servers)
	$(BIN)/pytest

test-unit: $(STAMP) ## unit tests only (no server, no system binary, no trained model; under 2 minutes)
	$(BIN)/pytest -m unit tests/unit
test-data: $(STAMP) ## data tests only
	$(BIN)/pytest -m data tests/data
test-model: $(STAMP) ## model behaviour tests only (trains small models)
	$(BIN)/pytest -m model tests/model
test-integration: $(STAMP) system-packages ## integration tests (the service under granian, real MLflow, PostgreSQL, S3 servers, validators)
	$(BIN)/pytest -m integration tests/integration

ingest: $(STAMP) ## snapshot the data source (content-hashed, immutable)
	$(PY) -m training.data ingest

validate: ingest ## validate the latest snapshot against the declared schema
	$(PY) -m training.validate

train: validate ## train baseline + tuned XGBoost, log to MLflow, register as 'challenger'
	$(PY) -m training.train

gate: $(STAMP) ## judge 'challenger' against floors, 'champion', behaviour, latency; promote on pass
	$(PY) -m training.gate

settings-doc: $(STAMP) ## regenerate docs/settings.md from the settings classes
	$(PY) -m tools.settings_reference

model-card: $(STAMP) ## rewrite the measured tables of the champion's model card (docs/model_card.md, docs/model_cards/<data set>.md, or MODEL_CARD)
	$(PY) -m operations model-card

demo: $(STAMP) ## the main job on the embedded default
	$(PY) -m operations demo

demo-late-labels: $(STAMP) ## the loop when labels come back 30 days late (simulated clock)
	$(PY) -m operations demo --late-labels

monitor: $(STAMP) ## one drift + live-quality check of the recent predictions (history row, report, trigger)
	$(PY) -m monitoring.monitor run

retrain: $(STAMP) ## original data + labelled production records -> new snapshot, train, gate, promote
	$(PY) -m training.retrain

retrain-scheduled: $(STAMP) ## the scheduled retrain: start one only when there is new data since the champion
	$(PY) -m monitoring.monitor scheduled

simulate: $(STAMP) ## traffic to the service: SCENARIO=none|covariate|unseen_category|missing|label_shift
	$(PY) -m operations simulate --scenario $(or $(SCENARIO),none) $(SIMULATE_ARGS)

# VERSION and ROLLBACK_ARGS reach the command through the environment, unexpanded ($(value ...)), never
# pasted into the shell line; `--args-env` splits ROLLBACK_ARGS honouring quotes without running a shell
# (an unbalanced quote: exit 2, nothing run), and operations/rollback.py checks every option before it
# moves the alias.
unexport VERSION ROLLBACK_ARGS HISTORY_ARGS  # make would expand them ($(shell ...)) to put them in the environment
rollback: export ROLLBACK_VERSION := $(value VERSION)
rollback: export ROLLBACK_EXTRA_ARGS := $(value ROLLBACK_ARGS)
rollback: $(STAMP) ## move 'champion' back (VERSION=n optional) and wait until the service serves it
	$(PY) -m operations rollback $${ROLLBACK_VERSION:+"$$ROLLBACK_VERSION"} --args-env ROLLBACK_EXTRA_ARGS

# HISTORY_ARGS (e.g. "--limit 20 --json") the same way as ROLLBACK_ARGS: split without a shell.
history: export HISTORY_EXTRA_ARGS := $(value HISTORY_ARGS)
history: $(STAMP) ## the champion timeline: every move (when, from/to, kind, who, records served, why); HISTORY_ARGS="--json"
	$(PY) -m operations history --args-env HISTORY_EXTRA_ARGS

retention: $(STAMP) ## archive the prediction log's days past LOG_RETENTION_DAYS to LOG_ARCHIVE_URI (Parquet), delete them
	$(PY) -m operations retention

# Backup and restore (operations/backup.py, docs/runbook.md "Backup and restore"). BACKUP_DIR and BACKUP_KEEP
# are settings (the environment); ARCHIVE and RESTORE_ARGS (e.g. "--force") reach the command unexpanded
# and unsplit by a shell, like ROLLBACK_ARGS.
unexport ARCHIVE RESTORE_ARGS
backup: $(STAMP) ## one dated archive of the databases, objects and data into BACKUP_DIR; keeps the newest BACKUP_KEEP
	$(PY) -m operations backup

restore: export RESTORE_ARCHIVE := $(value ARCHIVE)
restore: export RESTORE_EXTRA_ARGS := $(value RESTORE_ARGS)
restore: $(STAMP) ## ARCHIVE=path [RESTORE_ARGS=--force]: put a backup into an empty target (checked first)
	@test -n "$$RESTORE_ARCHIVE" || { echo "error: make restore ARCHIVE=path/churnops-backup-....tar" >&2; exit 2; }
	$(PY) -m operations restore "$$RESTORE_ARCHIVE" --args-env RESTORE_EXTRA_ARGS

# Batch scoring (docs/scaling.md). INPUT, OUTPUT, KEYS, MODEL, ENGINE, REJECTS reach python -m scoring as
# SCORE_* variables, unexpanded ($(value ...)) like rollback's; unset ones keep the environment's SCORE_*.
unexport INPUT OUTPUT KEYS MODEL ENGINE REJECTS
score: export SCORE_INPUT := $(if $(value INPUT),$(value INPUT),$(value SCORE_INPUT))
score: export SCORE_OUTPUT := $(if $(value OUTPUT),$(value OUTPUT),$(value SCORE_OUTPUT))
score: export SCORE_KEYS := $(if $(value KEYS),$(value KEYS),$(value SCORE_KEYS))
score: export SCORE_MODEL := $(if $(value MODEL),$(value MODEL),$(value SCORE_MODEL))
score: export SCORE_ENGINE := $(if $(value ENGINE),$(value ENGINE),$(value SCORE_ENGINE))
score: export SCORE_REJECTS := $(if $(value REJECTS),$(value REJECTS),$(value SCORE_REJECTS))
score: $(STAMP) $(if $(filter spark,$(value ENGINE) $(value SCORE_ENGINE)),install-spark) ## score a table: INPUT=customers.parquet OUTPUT=scores.parquet [KEYS=customer_id MODEL=champion ENGINE=local|spark]
	$(PY) -m scoring

bench: bench-train bench-serve bench-tails bench-slow-clients bench-drift bench-estimate bench-shadow bench-score bench-retention bench-soak ## every benchmark (bench-soak: 15 min of it); tables go to docs/benchmarks.md

bench-score: $(STAMP) ## batch scoring on 1M and 10M generated rows vs XGBoost's inplace_predict floor -> docs/benchmarks.md
	$(PY) -m tools.bench_score

bench-train: $(STAMP) ## training wall time and peak memory -> docs/benchmarks.md
	$(PY) -m tools.bench_train

# MLServer pins versions the project does not use (fastapi < 0.116, ...): it gets its own venv, never .venv
# or requirements.lock. A failed build costs bench-serve only MLServer's rows (the section says why).
mlserver-venv: ## MLServer + its MLflow runtime in their own venv (STATE_DIR/venvs/mlserver) for bench-serve
	@PYTHON="$(PYTHON)" tools/mlserver_venv.sh

bench-serve: $(STAMP) ## this service vs MLServer (MLflow runtime) and `mlflow models serve` under wrk -> docs/benchmarks.md (Serving)
	@PYTHON="$(PYTHON)" tools/mlserver_venv.sh || echo "bench-serve: MLServer's venv could not be built; its rows will be missing"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m tools.bench_serve

bench-drift: $(STAMP) ## drift detection power per feature and shift, false alarms -> docs/benchmarks.md (needs a champion)
	$(PY) -m tools.bench_drift

bench-estimate: $(STAMP) ## quality estimated without labels (CBPE) vs realized, held-out windows -> docs/benchmarks.md
	$(PY) -m tools.bench_estimate

bench-slow-clients: $(STAMP) ## /health under 12 slow-header connections, granian vs gunicorn -> docs/benchmarks.md (Slow clients; needs a champion)
	$(PY) -m tools.bench_slow_clients

bench-shadow: $(STAMP) ## p50/p99 of /v1/predict with shadow scoring at 0%, 10%, 100% -> docs/benchmarks.md (Shadow scoring)
	$(PY) -m tools.bench_shadow

bench-retention: $(STAMP) ## 60 simulated days of the prediction log with retention: DB size flat, job time, write p99 -> docs/benchmarks.md
	$(PY) -m tools.bench_retention

bench-tails: $(STAMP) ## 100-record p99/p50, 1,000-record records/s with the log caught up (SQLite, PostgreSQL), single vs /health, CPU per record and py-spy -> docs/benchmarks.md (Tails; needs a champion)
	$(PY) -m tools.bench_tails

bench-soak: $(STAMP) ## 15 min open-loop mixed traffic at 70% of capacity, PostgreSQL: p50/p99, spool, RSS, rows per minute; every answered record stored -> docs/benchmarks.md (Soak; needs a champion)
	$(PY) -m tools.bench_soak

serve: $(STAMP) ## the model service (granian, model_service/server.py) on the embedded default (needs API_KEYS or AUTH_ENABLED=false)
	$(PY) -m model_service.server

# Pictures in docs/images (docs/walkthrough.md): headless Debian chromium driven by playwright-core; the npm
# packages stay out of the repository, in NODE_DIR. The store is a throwaway folder under /tmp.
NODE_DIR ?= /tmp/churnops-node
NODE_PACKAGES := playwright-core@1.65.1 mermaid@11.17.2
.PHONY: screenshots diagram node-packages
node-packages:
	@test -d $(NODE_DIR)/node_modules/playwright-core -a -d $(NODE_DIR)/node_modules/mermaid || \
	  { mkdir -p $(NODE_DIR) && cd $(NODE_DIR) && npm install --silent --no-audit --no-fund --no-save $(NODE_PACKAGES); }

screenshots: $(STAMP) node-packages ## retake docs/images/*.png: demo on a /tmp store, serve, MLflow UI, shoot
	NODE_DIR=$(NODE_DIR) $(PY) -m tools.screenshots

diagram: $(STAMP) node-packages ## render the Mermaid diagram of docs/architecture.md to docs/images/architecture.png
	NODE_DIR=$(NODE_DIR) $(PY) -m tools.screenshots --only diagram

clean-state: ## delete the embedded default's state (var/): snapshots, MLflow store, logs
	rm -rf var

clean: clean-state ## also delete the virtual environment
	rm -rf $(VENV)

# --- the on-prem stack and the pipeline (docs/deploy.md) -------------------------------------------
GIT_COMMIT     ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
REGISTRY       ?= localhost:5000
IMAGE_TAG      ?= $(GIT_COMMIT)
STACK_ENV_FILE ?= .env
COMPOSE        ?= docker compose
COMPOSE_FILES  ?= compose/docker-compose.yml
STACK          := $(COMPOSE) --env-file $(STACK_ENV_FILE) $(addprefix -f ,$(COMPOSE_FILES))
IMAGES         := service monitor training s3
LOAD_TEST_DIR  ?= var/reports/load-test
comma          := ,
export REGISTRY IMAGE_TAG

.PHONY: validate-stack images images-offline push deploy smoke load-test stack-up stack-down stack-native stack-native-reset stack-test bench-stack \
        stack-backup stack-restore

validate-stack: $(STAMP) ## offline checks: compose, hadolint, promtool, jenkins-jobs, Jenkinsfile, dashboards
	$(PY) -m tools.validate_stack

# Builds use BuildKit (the Dockerfiles take pip settings and a CA bundle as build secrets). DOCKER_BUILD:
# `docker build` when buildx is there, else a CLI with BuildKit built in (Debian's docker.io 20.10).
# IMAGE_BUILD_ARGS: e.g. local bases (docker/offline/build.sh); PIP_SECRETS_DIR: pip.conf and ca.crt.
DOCKER_BUILD     ?= $(shell if docker buildx version >/dev/null 2>&1; then echo docker build; \
                      elif /usr/bin/docker --version 2>/dev/null | grep -qE ' (19|20|21|22)\.'; then echo /usr/bin/docker build; \
                      else echo docker build; fi)
IMAGE_BUILD_ARGS ?=
PIP_SECRETS_DIR  ?=
images: ## build the images (service, monitor, training, s3: Ceph RGW), tagged with the git commit; Debian package lists -> var/images
	@for image in $(IMAGES); do \
	  echo "building $(REGISTRY)/churnops-$$image:$(IMAGE_TAG)"; \
	  target=; if [ $$image = training ]; then target="--target training"; fi; \
	  DOCKER_BUILDKIT=1 $(DOCKER_BUILD) -q -f docker/$$image.Dockerfile $$target --build-arg GIT_COMMIT=$(IMAGE_TAG) $(IMAGE_BUILD_ARGS) \
	    $(if $(PIP_SECRETS_DIR),--secret id=pipconf$(comma)src=$(PIP_SECRETS_DIR)/pip.conf --secret id=cacert$(comma)src=$(PIP_SECRETS_DIR)/ca.crt) \
	    -t $(REGISTRY)/churnops-$$image:$(IMAGE_TAG) -t $(REGISTRY)/churnops-$$image:latest . || exit 1; \
	  docker/package-list.sh $(REGISTRY)/churnops-$$image:$(IMAGE_TAG) $$image || exit 1; \
	done

images-offline: ## the same images without a registry: bases from debootstrap + Debian + PyPI (docs/deploy.md)
	docker/offline/build.sh all

push: images ## push the commit-tagged images to the stack's registry
	@for image in $(IMAGES); do \
	  docker push $(REGISTRY)/churnops-$$image:$(IMAGE_TAG) && docker push $(REGISTRY)/churnops-$$image:latest || exit 1; \
	done

deploy: ## roll the service replicas and the monitor to IMAGE_TAG (compose up, no rebuild)
	$(STACK) up -d --no-build --no-deps --wait model-service monitor

smoke: $(STAMP) ## the deployed service: ready + one prediction of a held-out record (SERVICE_URL)
	$(PY) -m load_tests.smoke

LOAD_TEST_THRESHOLDS ?= load_tests/thresholds.yaml
export LOAD_TEST_THRESHOLDS
load_test_run = $$($(PY) -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['run']['$(1)'])" "$(LOAD_TEST_THRESHOLDS)")

load-test: $(STAMP) ## Locust headless against SERVICE_URL; fails past LOAD_TEST_THRESHOLDS (load_tests/thresholds.yaml)
	@mkdir -p $(LOAD_TEST_DIR)
	LOAD_TEST_REPORT=$(LOAD_TEST_DIR)/summary.json $(BIN)/locust -f load_tests/locustfile.py --headless \
	  --host $${SERVICE_URL:-http://127.0.0.1:8000} \
	  --users $(call load_test_run,users) \
	  --spawn-rate $(call load_test_run,spawn_rate) \
	  --run-time $(call load_test_run,run_time) \
	  --csv $(LOAD_TEST_DIR)/locust --html $(LOAD_TEST_DIR)/locust.html --only-summary

stack-up: ## the Compose stack (needs a Docker engine and .env; see .env.example)
	@test -f $(STACK_ENV_FILE) || { echo "no $(STACK_ENV_FILE): cp .env.example .env and fill it"; exit 1; }
	$(STACK) up -d --wait

stack-down: ## stop the Compose stack (volumes kept; `$(STACK) down -v` drops them)
	$(STACK) down

# The Compose stack's backup runs in the trainer's container (it reaches postgres and s3, and holds the
# training data volume); the archive travels to and from STACK_BACKUP_DIR on the host as a tar stream on
# stdin/stdout (written by the host user: no bind mount owned by the container's uid).
STACK_BACKUP_DIR ?= var/backups/compose
BACKUP_KEEP      ?= 7
stack_job = $(STACK) --profile jobs run --rm --no-deps -T trainer sh -c
stack-backup: ## the Compose stack's backup (run in the trainer container) into STACK_BACKUP_DIR; keeps BACKUP_KEEP
	@mkdir -p "$(STACK_BACKUP_DIR)"
	$(stack_job) 'python -m operations backup --dir /tmp/backup --keep 0 >&2 && tar -C /tmp/backup -cf - .' \
	  > "$(STACK_BACKUP_DIR)/.incoming" && tar -C "$(STACK_BACKUP_DIR)" -xf "$(STACK_BACKUP_DIR)/.incoming"; \
	  status=$$?; rm -f "$(STACK_BACKUP_DIR)/.incoming"; exit $$status
	@if [ "$(BACKUP_KEEP)" -gt 0 ]; then ls -1 "$(STACK_BACKUP_DIR)"/churnops-backup-*.tar | sort | head -n -$(BACKUP_KEEP) | xargs -r rm -v --; fi

stack-restore: export RESTORE_ARCHIVE := $(value ARCHIVE)
stack-restore: export RESTORE_ARGS := $(value RESTORE_ARGS)
stack-restore: ## ARCHIVE=path/churnops-backup-....tar [RESTORE_ARGS=--force] into the Compose stack (trainer container)
	@test -f "$$RESTORE_ARCHIVE" || { echo "error: make stack-restore ARCHIVE=$(STACK_BACKUP_DIR)/churnops-backup-....tar" >&2; exit 2; }
	tar -C "$$(dirname "$$RESTORE_ARCHIVE")" -cf - "$$(basename "$$RESTORE_ARCHIVE")" \
	  | $(STACK) --profile jobs run --rm --no-deps -T -e RESTORE_ARGS trainer sh -c \
	    'mkdir -p /tmp/restore && tar -C /tmp/restore -xf - && python -m operations restore /tmp/restore/*.tar --args-env RESTORE_ARGS'

stack-test: $(STAMP) ## the stack for real: engine, offline images, pipeline stages, loop, faults, PromQL; always down -v
	$(PY) -m tests.support.stack_test

bench-stack: $(STAMP) ## the stack test's measured figures (var/stack-test/results-*.json) -> docs/benchmarks.md (Stack)
	$(PY) -m tools.bench_stack

stack-native: $(STAMP) ## the same services natively on loopback (Procfile, honcho); Ctrl-C stops them
	$(PY) -m operations native-stack up

stack-native-reset: $(STAMP) ## delete the native stack's state (STACK_DIR, var/stack): registry, data, secrets
	$(PY) -m operations native-stack reset
