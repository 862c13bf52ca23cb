# Third-party services of the stack without a registry, from Debian bookworm packages on the
# debootstrap base (docker/offline/bases.sh); one target each, swapped in by compose/offline.yml:
#   postgres      PostgreSQL 15, an entrypoint that runs initdb and /docker-entrypoint-initdb.d once
#   prometheus    Prometheus 2.42          alertmanager  Alertmanager 0.25
#   nginx         nginx, the load balancer, unprivileged on 8080
#   registry      the Docker registry (distribution 2.8)
#   s3            moto_server (PyPI moto[server]) standing in for MinIO: objects are kept IN MEMORY
# Each keeps the paths, ports and health probes of the upstream image it replaces.
ARG BASE_IMAGE=churnops-offline/debian:bookworm
ARG PYTHON_IMAGE=churnops-offline/python:3.11
ARG WGET_VERSION=1.21.3-1+deb12u1

# ---------------------------------------------------------------- postgres
FROM ${BASE_IMAGE} AS postgres
ARG POSTGRES_VERSION=15.20-0+deb12u1
# the postgres user gets the upstream image's uid/gid (999) before the package would pick one
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/sh postgres \
 && apt-get update \
 && apt-get install --yes --no-install-recommends postgresql-15=${POSTGRES_VERSION} \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER 999:999
EXPOSE 5432
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=10 CMD ["pg_isready", "-U", "postgres"]
# as the upstream image: SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client)
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres", "-c", "listen_addresses=*"]

# ---------------------------------------------------------------- prometheus
FROM ${BASE_IMAGE} AS prometheus
ARG PROMETHEUS_VERSION=2.42.0+ds-5+deb12u1
ARG WGET_VERSION
RUN apt-get update \
 && apt-get install --yes --no-install-recommends prometheus=${PROMETHEUS_VERSION} wget=${WGET_VERSION} \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=3s --retries=5 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

# ---------------------------------------------------------------- alertmanager
FROM ${BASE_IMAGE} AS alertmanager
ARG ALERTMANAGER_VERSION=0.25.0-1+b4
ARG WGET_VERSION
RUN apt-get update \
 && apt-get install --yes --no-install-recommends prometheus-alertmanager=${ALERTMANAGER_VERSION} wget=${WGET_VERSION} \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /alertmanager && chown 65534:65534 /alertmanager \
 && ln -s /usr/bin/prometheus-alertmanager /usr/bin/alertmanager
# /bin/alertmanager as in the upstream image: Compose's entrypoint (it writes the webhook token file) runs it
USER 65534:65534
EXPOSE 9093
HEALTHCHECK --interval=15s --timeout=3s --retries=5 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9093/-/ready"]
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager", "--cluster.listen-address="]

# ---------------------------------------------------------------- nginx
FROM ${BASE_IMAGE} AS nginx
ARG NGINX_VERSION=1.22.1-9+deb12u11
ARG WGET_VERSION
RUN apt-get update \
 && apt-get install --yes --no-install-recommends nginx=${NGINX_VERSION} wget=${WGET_VERSION} \
 && rm -rf /var/lib/apt/lists/* \
 && chown -R www-data:www-data /var/log/nginx /var/lib/nginx
USER 33:33
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/lb-health"]
CMD ["nginx", "-g", "daemon off;"]

# ---------------------------------------------------------------- registry
FROM ${BASE_IMAGE} AS registry
ARG REGISTRY_VERSION=2.8.2+ds1-1
ARG WGET_VERSION
RUN apt-get update \
 && apt-get install --yes --no-install-recommends docker-registry=${REGISTRY_VERSION} wget=${WGET_VERSION} \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/registry /etc/distribution \
 && printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete:\n    enabled: true\nhttp:\n  addr: :5000\n' > /etc/distribution/config.yml \
 && chown -R 65534:65534 /var/lib/registry
USER 65534:65534
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --retries=5 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:5000/v2/"]
ENTRYPOINT ["/usr/bin/docker-registry"]
CMD ["serve", "/etc/distribution/config.yml"]

# ---------------------------------------------------------------- s3 (moto_server, in memory)
FROM ${PYTHON_IMAGE} AS s3
ARG MOTO_VERSION=5.2.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/moto
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
 && if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && /opt/moto/bin/pip install --no-cache-dir "moto[server]==${MOTO_VERSION}"
ENV PATH=/opt/moto/bin:$PATH
USER 65534:65534
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=5s --retries=10 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/moto-api/', timeout=3)"]
CMD ["moto_server", "-H", "0.0.0.0", "-p", "9000"]
