# Python base without a registry: Debian bookworm's python3 (3.11) with venv and pip, on the debootstrap
# image made by docker/offline/bases.sh. Stands in for python:3.11-slim-bookworm (PYTHON_IMAGE).
ARG BASE_IMAGE=churnops-offline/debian:bookworm
FROM ${BASE_IMAGE}
ARG PYTHON_VERSION=3.11.2-1+b1
RUN apt-get update \
 && apt-get install --yes --no-install-recommends \
      python3=${PYTHON_VERSION} python3-venv=${PYTHON_VERSION} python-is-python3=3.11.2-1+deb12u1 \
 && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
HEALTHCHECK NONE
CMD ["python3"]
