# Monitor image: `python -m monitoring.monitor loop` (a check every MONITOR_INTERVAL_SECONDS), its
# Prometheus metrics and the Alertmanager webhook (POST /alerts) on MONITOR_METRICS_PORT (9108).
# Same build stage as the service image (the builder reuses its cached layers).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

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

FROM ${PYTHON_IMAGE} AS runtime
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="churnops-monitor" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Debian packages without versions (docker/apt-install.sh: bookworm and its security suite; what was
# installed is recorded in /usr/share/churnops/packages.txt and printed by the build).
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install libgomp1 \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY . /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_COMMIT=${GIT_COMMIT} \
    MONITOR_METRICS_PORT=9108
USER 10001:10001
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/metrics', timeout=2)"]
CMD ["python", "-m", "monitoring.monitor", "loop"]
