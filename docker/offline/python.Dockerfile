# Python base without a registry: Debian bookworm's python3 (3.11) with venv and pip, on the debootstrap
# image made by docker/offline/bases.sh. Stands in for python:3.11-slim-bookworm (PYTHON_IMAGE).
ARG BASE_IMAGE=churnops-offline/debian:bookworm
FROM ${BASE_IMAGE}
# Debian packages without versions (docker/apt-install.sh: bookworm and its security suite; what was
# installed is recorded in /usr/share/churnops/packages.txt and printed by the build).
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install python3 python3-venv python-is-python3
ENV LANG=C.UTF-8
HEALTHCHECK NONE
CMD ["python3"]
