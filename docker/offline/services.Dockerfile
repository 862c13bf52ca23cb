# Third-party services of the stack without a registry, from Debian bookworm packages on the
# debootstrap base (docker/offline/bases.sh); one target each, swapped in by compose/offline.yml:
#   postgres      PostgreSQL 15, an entrypoint that runs initdb and /docker-entrypoint-initdb.d once
#   prometheus    Prometheus 2.42          alertmanager  Alertmanager 0.25
#   nginx         nginx, the load balancer, unprivileged on 8080
#   registry      the Docker registry (distribution 2.8)
# Each keeps the paths, ports and health probes of the upstream image it replaces. Packages come without
# versions from bookworm and its security suite (docker/apt-install.sh records and prints what was installed).
ARG BASE_IMAGE=churnops-offline/debian:bookworm
ARG PYTHON_IMAGE=churnops-offline/python:3.11

# ---------------------------------------------------------------- postgres
FROM ${BASE_IMAGE} AS postgres
# the postgres user gets the upstream image's uid/gid (999) before the package would pick one
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/sh postgres \
 && apt-install postgresql-15 \
 && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY docker/offline/postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
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
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install prometheus wget \
 && mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=3s --retries=5 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

# ---------------------------------------------------------------- alertmanager
FROM ${BASE_IMAGE} AS alertmanager
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install prometheus-alertmanager wget \
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
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install nginx wget \
 && chown -R www-data:www-data /var/log/nginx /var/lib/nginx
USER 33:33
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/lb-health"]
CMD ["nginx", "-g", "daemon off;"]

# ---------------------------------------------------------------- registry
FROM ${BASE_IMAGE} AS registry
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install docker-registry wget \
 && mkdir -p /var/lib/registry /etc/distribution \
 && printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete:\n    enabled: true\nhttp:\n  addr: :5000\n' > /etc/distribution/config.yml \
 && chown -R 65534:65534 /var/lib/registry
USER 65534:65534
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --retries=5 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:5000/v2/"]
ENTRYPOINT ["/usr/bin/docker-registry"]
CMD ["serve", "/etc/distribution/config.yml"]
