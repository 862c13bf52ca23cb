# Training image, also the Jenkins agent every pipeline stage runs in (`agent { dockerfile ... }`):
# the locked runtime + dev dependencies, make and git, the Docker CLI with the Compose plugin (Build &
# Push, Deploy talk to the host's engine through its socket), and the servers `make test` starts
# (PostgreSQL, Prometheus, Alertmanager) plus Groovy for the Jenkinsfile syntax check.
# Bases are build arguments: upstream images by default, local ones without a registry
# (docker/offline/build.sh).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG DOCKER_CLI_IMAGE=docker:28.2.2-cli
ARG COMPOSE_IMAGE=docker/compose-bin:v2.40.3

FROM ${DOCKER_CLI_IMAGE} AS docker-cli
FROM ${COMPOSE_IMAGE} AS compose-bin

# ---- build: the locked dependencies, dev extras included (lint, tests, Locust, validators)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock docker/pip-install.sh ./
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert sh pip-install.sh service
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert sh pip-install.sh runtime
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert sh pip-install.sh dev

# ---- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG GIT_COMMIT=unknown
# Debian bookworm versions (main, updates, security); bump together with the base image.
ARG LIBGOMP_VERSION=12.2.0-14+deb12u1
ARG GIT_VERSION=1:2.39.5-0+deb12u3
ARG MAKE_VERSION=4.3-4.1
ARG POSTGRES_VERSION=15.20-0+deb12u1
ARG PROMETHEUS_VERSION=2.42.0+ds-5+deb12u1
ARG ALERTMANAGER_VERSION=0.25.0-1+b4
ARG GROOVY_VERSION=2.4.21-8
LABEL org.opencontainers.image.title="churnops-training" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
# /data: the training data volume (snapshots, reports) is created from this folder, so it belongs to
# the app user; a volume over a missing folder would be root's and training would fail to write.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends \
      libgomp1=${LIBGOMP_VERSION} git=${GIT_VERSION} make=${MAKE_VERSION} \
      postgresql-15=${POSTGRES_VERSION} postgresql-client-15=${POSTGRES_VERSION} \
      prometheus=${PROMETHEUS_VERSION} prometheus-alertmanager=${ALERTMANAGER_VERSION} \
      groovy=${GROOVY_VERSION} \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --create-home --uid 10001 --gid app --shell /bin/bash app \
 && mkdir -p /data/snapshots /data/reports && chown -R app:app /data
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=compose-bin /docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app . /app
ENV PATH=/opt/venv/bin:/usr/lib/postgresql/15/bin:$PATH \
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
