#!/usr/bin/env bash
# Base images without a registry (air-gapped sites, and CI on this machine): everything from OS
# packages and PyPI only.
#   churnops-offline/debian:bookworm   debootstrap --variant=minbase of the host's Debian mirror
#   churnops-offline/python:3.11       Debian's python3 + venv + pip on it (the PYTHON_IMAGE build arg)
# Usage: docker/offline/bases.sh [--force]   (skips an image that exists unless --force)
# Environment: DEBIAN_MIRROR (default: the first bookworm URI of the host's apt sources),
#              OFFLINE_PREFIX (default churnops-offline).
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX="${OFFLINE_PREFIX:-churnops-offline}"
FORCE="${1:-}"

have() { [ "$FORCE" != "--force" ] && docker image inspect "$1" >/dev/null 2>&1; }

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -v security | head -n1 | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' \
        | awk '{print $1}')
  echo "${uri:-http://deb.debian.org/debian}"
}

if have "$PREFIX/debian:bookworm"; then
  echo "bases: $PREFIX/debian:bookworm exists"
else
  command -v debootstrap >/dev/null || { echo "bases: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
  rootfs=$(mktemp -d /tmp/churnops-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  start=$(date +%s)
  echo "bases: debootstrap bookworm from $(mirror) (about 90 s)"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$(mirror)" >/tmp/churnops-debootstrap.log 2>&1 \
    || { tail -20 /tmp/churnops-debootstrap.log >&2; exit 1; }
  # the suites the upstream debian:bookworm image has (security updates: the pinned versions need them)
  m=$(mirror)
  {
    echo "deb $m bookworm main"
    echo "deb $m bookworm-updates main"
    echo "deb ${DEBIAN_SECURITY_MIRROR:-${m%/debian}/debian-security} bookworm-security main"
  } > "$rootfs/etc/apt/sources.list"
  # apt in images keeps no package cache, as in the upstream debian images (else ~80 MB per apt layer)
  cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
    > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  mkdir -p "$rootfs/usr/share/man/man1"   # OpenJDK's postinst (groovy) links a man page there
  tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$PREFIX/debian:bookworm" >/dev/null
  echo "bases: $PREFIX/debian:bookworm in $(( $(date +%s) - start )) s"
fi

if have "$PREFIX/python:3.11"; then
  echo "bases: $PREFIX/python:3.11 exists"
else
  start=$(date +%s)
  ${DOCKER_BUILD:-docker build} -q -f docker/offline/python.Dockerfile --build-arg "BASE_IMAGE=$PREFIX/debian:bookworm" \
    -t "$PREFIX/python:3.11" . >/dev/null
  echo "bases: $PREFIX/python:3.11 in $(( $(date +%s) - start )) s"
fi
