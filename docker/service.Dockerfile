# Model service image: gunicorn serving the MLflow "champion" of MODEL_NAME on port 8000.
# Build from the repository root:  docker build -f docker/service.Dockerfile --build-arg GIT_COMMIT=$(git rev-parse HEAD) .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: the locked runtime dependencies in a virtual environment (no compilers needed: all wheels)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# Resolve pyproject's runtime dependencies against the lock, then drop the project itself: the code
# lives in /app (PYTHONPATH) so that config/ and the code stay side by side as in the repository.
RUN mkdir core training model_service monitoring \
 && pip install --no-cache-dir -c requirements.lock . \
 && pip uninstall --yes churnops

# ---- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="churnops-service" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp1: XGBoost's OpenMP runtime (the slim base does not ship it).
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY config config
COPY core core
COPY training training
COPY model_service model_service
COPY monitoring monitoring
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_COMMIT=${GIT_COMMIT} \
    HOST=0.0.0.0 \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc \
    SPOOL_DIR=/var/spool/churnops
# the spool must outlive the container: Compose mounts a named volume here (flock-shared by replicas)
RUN mkdir -p /var/spool/churnops && chown 10001:10001 /var/spool/churnops
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
CMD ["gunicorn", "-c", "model_service/gunicorn_conf.py", "model_service.app:create_app()"]
