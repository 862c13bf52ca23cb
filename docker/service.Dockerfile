# Model service image: granian (model_service/server.py) serving the MLflow "champion" of MODEL_NAME on port 8000; the stack's
# MLflow server runs from it too. Build from the repository root (`make images`, or
# docker/offline/build.sh without a registry). The base is a build argument: PYTHON_IMAGE.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: the locked runtime dependencies in a virtual environment (no compilers needed: all wheels)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock docker/pip-install.sh ./
# pyproject's runtime dependencies, resolved against the lock (the project's code goes to /app below,
# so a new top-level package needs no change here). Pip settings and an extra CA bundle come as
# BuildKit secrets (pipconf, cacert): used by this step only, never stored in a layer.
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert sh pip-install.sh service

# ---- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="churnops-service" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp1: XGBoost's OpenMP runtime (the slim base does not ship it).
# Debian packages without versions (docker/apt-install.sh: bookworm and its security suite; what was
# installed is recorded in /usr/share/churnops/packages.txt and printed by the build).
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install libgomp1 \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /var/spool/churnops && chown 10001:10001 /var/spool/churnops
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# the project's tree as filtered by .dockerignore (code and config; owned by root, read-only for app)
COPY . /app
# PROMETHEUS_MULTIPROC_DIR is not set here: model_service/server.py makes its own folder unless Compose sets
# one, and the MLflow server (same image) must not inherit a folder that does not exist in it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_COMMIT=${GIT_COMMIT} \
    HOST=0.0.0.0 \
    PORT=8000 \
    SPOOL_DIR=/var/spool/churnops
# the spool must outlive the container: Compose mounts a named volume there (flock-shared by replicas)
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
CMD ["python", "-m", "model_service.server"]
