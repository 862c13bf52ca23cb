# Two images from one file, both with make and the Docker CLI + Compose plugin (Build & Push, Deploy talk
# to the host's engine through its socket):
# - target `training` (`make images`: REGISTRY/churnops-training): the pipeline's jobs, i.e. train, gate,
#   retrain, push, deploy, smoke, load test (runtime dependencies + Locust); the stack's trainer and
#   retrain jobs run in it;
# - target `agent` (the last stage, so the default of Jenkins' `agent { dockerfile ... }`): the same plus
#   the dev extras (lint, tests, validators) and the servers `make test` starts (PostgreSQL, Prometheus,
#   Alertmanager) and Groovy for the Jenkinsfile syntax check.
# Bases are build arguments: upstream images by default, local ones without a registry
# (docker/offline/build.sh).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG DOCKER_CLI_IMAGE=docker:28.2.2-cli
ARG COMPOSE_IMAGE=docker/compose-bin:v2.40.3

FROM ${DOCKER_CLI_IMAGE} AS docker-cli
FROM ${COMPOSE_IMAGE} AS compose-bin

# ---- build: the locked dependencies in nested sets (the service and monitor images share the first steps)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock docker/pip-install.sh ./
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert sh pip-install.sh service
# one step per set, not one RUN: the smaller sets' layers are shared with the other images' builds
# hadolint ignore=DL3059
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert sh pip-install.sh runtime
# hadolint ignore=DL3059
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert sh pip-install.sh pipeline

FROM build AS build-dev
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert sh pip-install.sh dev

# ---- training: the pipeline's jobs
FROM ${PYTHON_IMAGE} AS training
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="churnops-training" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
# No git here (it brings Perl): the commit comes from GIT_COMMIT (build argument, Makefile, MLflow tags).
# /data: the training data volume (snapshots, reports) is created from this folder, so it belongs to
# the app user; a volume over a missing folder would be root's and training would fail to write.
# Debian packages without versions (docker/apt-install.sh: bookworm and its security suite; what was
# installed is recorded in /usr/share/churnops/packages.txt and printed by the build). postgresql-client-15:
# pg_dump / pg_restore of `make backup` / `make restore` (the stack's server is PostgreSQL 15).
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install libgomp1 make postgresql-client-15 \
 && groupadd --system --gid 10001 app \
 && useradd --create-home --uid 10001 --gid app --shell /bin/bash app \
 && mkdir -p /data/snapshots /data/reports && chown -R app:app /data \
 && install -d -o app -g app /app
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=compose-bin /docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app . /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_COMMIT=${GIT_COMMIT} \
    MAKEFLAGS="VENV=/opt/venv STAMP="
# MAKEFLAGS: `make` uses the image's venv as built (no install step), also in a Jenkins workspace.
USER 10001:10001
# One-shot jobs (train, gate, retrain) have no server to probe: the check is that the toolchain imports.
HEALTHCHECK --interval=60s --timeout=10s --retries=3 \
  CMD ["python", "-c", "import mlflow, sklearn, xgboost, training.settings"]
CMD ["make", "train", "gate"]

# ---- agent: every stage of the Jenkinsfile, Lint and Test included
FROM ${PYTHON_IMAGE} AS agent
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="churnops-agent" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install libgomp1 git make postgresql-15 postgresql-client-15 prometheus prometheus-alertmanager groovy \
 && groupadd --system --gid 10001 app \
 && useradd --create-home --uid 10001 --gid app --shell /bin/bash app \
 && mkdir -p /data/snapshots /data/reports && chown -R app:app /data \
 && install -d -o app -g app /app
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=compose-bin /docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
COPY --from=build-dev /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app . /app
ENV PATH=/opt/venv/bin:/usr/lib/postgresql/15/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_COMMIT=${GIT_COMMIT} \
    MAKEFLAGS="VENV=/opt/venv STAMP="
USER 10001:10001
HEALTHCHECK --interval=60s --timeout=10s --retries=3 \
  CMD ["python", "-c", "import mlflow, sklearn, xgboost, training.settings"]
CMD ["make", "lint", "test"]
