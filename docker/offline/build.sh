#!/usr/bin/env bash
# Every image of the stack without a registry (air-gapped sites, CI here): bases from debootstrap and
# Debian packages (bases.sh), the third-party services from Debian packages (services.Dockerfile), the
# Docker CLI + Compose for the training image (tools.Dockerfile), then the project's images with
# `make images` and local bases as build arguments. The project Dockerfiles are the same both ways.
#
# PyPI access at build time: the host's pip settings that work inside a container (index URLs that are
# not file://, timeout, trusted hosts; never find-links to host folders) and its CA bundle (for a
# TLS-inspecting proxy) go to the builds as BuildKit secrets from a temporary folder, deleted at exit.
#
# Usage: docker/offline/build.sh [bases|services|project|all]     (default all)
# Environment: OFFLINE_PREFIX (churnops-offline), PIP_CA_BUNDLE (default: pip's `cert` setting, else
#   /etc/ssl/certs/ca-certificates.crt when /usr/local/share/ca-certificates has extra CAs),
#   BUILD_TIMES (a file that gets one "name seconds" line per image), IMAGE_TAG, REGISTRY,
#   NO_CACHE=1 (every image cold: debootstrap again, no layer cache; the weekly Jenkins job).
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX="${OFFLINE_PREFIX:-churnops-offline}"
WHAT="${1:-all}"
export DOCKER_BUILDKIT=1
NO_CACHE_ARG=""
if [ "${NO_CACHE:-0}" = 1 ]; then NO_CACHE_ARG="--no-cache"; fi

# a Docker CLI that can run BuildKit builds (secrets): `docker buildx`, else a CLI with BuildKit built in
if docker buildx version >/dev/null 2>&1; then DOCKER_BUILD="docker build"
elif [ -x /usr/bin/docker ] && /usr/bin/docker --version | grep -qE ' (19|20|21|22)\.'; then DOCKER_BUILD="/usr/bin/docker build"
else DOCKER_BUILD="docker build"; fi
export DOCKER_BUILD

secrets=$(mktemp -d /tmp/churnops-pip.XXXXXX)
trap 'rm -rf "$secrets"' EXIT
python3 - "$secrets" <<'PY'
import os, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
keep = {"index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "retries"}
lines = ["[global]"]
for line in out.splitlines():
    key, _, value = line.partition("=")
    name = key.split(".")[-1]
    value = value.strip().strip("'\"")
    if name not in keep:
        continue
    urls = [v for v in value.split() if not v.startswith("file:")]
    if urls:
        lines.append(f"{name.replace('default-timeout', 'timeout')} = {' '.join(urls)}")
open(os.path.join(sys.argv[1], "pip.conf"), "w").write("\n".join(dict.fromkeys(lines)) + "\n")
PY
ca="${PIP_CA_BUNDLE:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
if [ -z "$ca" ] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then ca=/etc/ssl/certs/ca-certificates.crt; fi
if [ -n "$ca" ] && [ -s "$ca" ]; then cp "$ca" "$secrets/ca.crt"; else : > "$secrets/ca.crt"; fi
SECRET_ARGS=(--secret "id=pipconf,src=$secrets/pip.conf" --secret "id=cacert,src=$secrets/ca.crt")

offline_build_args() {  # the local bases for the project's Dockerfiles
  echo "--build-arg BASE_IMAGE=$PREFIX/debian:bookworm --build-arg PYTHON_IMAGE=$PREFIX/python:3.11 --build-arg DOCKER_CLI_IMAGE=$PREFIX/docker-tools:bookworm --build-arg COMPOSE_IMAGE=$PREFIX/docker-tools:bookworm"
}

timed() {  # timed NAME CMD...: run, print and record the wall time
  local name=$1 start; shift; start=$(date +%s)
  "$@"
  local took=$(( $(date +%s) - start ))
  echo "build: $name in ${took} s" >&2
  if [ -n "${BUILD_TIMES:-}" ]; then echo "$name $took" >> "$BUILD_TIMES"; fi
}

build_bases() {
  timed bases docker/offline/bases.sh ${NO_CACHE_ARG:+--force}
  timed docker-tools $DOCKER_BUILD -q $NO_CACHE_ARG "${SECRET_ARGS[@]}" -f docker/offline/tools.Dockerfile \
    --build-arg "PYTHON_IMAGE=$PREFIX/python:3.11" --build-arg "BASE_IMAGE=$PREFIX/debian:bookworm" \
    -t "$PREFIX/docker-tools:bookworm" . >/dev/null
  docker/package-list.sh "$PREFIX/python:3.11" offline-python
}

build_services() {
  for target in postgres prometheus alertmanager nginx registry; do
    timed "$target" $DOCKER_BUILD -q $NO_CACHE_ARG "${SECRET_ARGS[@]}" -f docker/offline/services.Dockerfile --target "$target" \
      --build-arg "BASE_IMAGE=$PREFIX/debian:bookworm" --build-arg "PYTHON_IMAGE=$PREFIX/python:3.11" \
      -t "$PREFIX/$target:bookworm" . >/dev/null
    docker/package-list.sh "$PREFIX/$target:bookworm" "offline-$target"
  done
}

build_project() {
  timed project make --no-print-directory images DOCKER_BUILD="$DOCKER_BUILD" PIP_SECRETS_DIR="$secrets" \
    IMAGE_BUILD_ARGS="$(offline_build_args) $NO_CACHE_ARG"
}

case "$WHAT" in
  bases) build_bases ;;
  services) build_services ;;
  project) build_project ;;
  all) build_bases; build_services; build_project ;;
  args) offline_build_args ;;
  *) echo "usage: $0 [bases|services|project|all]" >&2; exit 2 ;;
esac
