#!/bin/sh
# apt-install PKG[=VERSION]...: install Debian packages in an image build and record what was installed.
#
# Recipes name packages without versions: an image gets bookworm's current version, security updates
# included, because Debian's security suite keeps only the newest version of a package and an exact pin
# breaks every fresh build on the day of the next update (nginx did on 2026-12-07). A pin may still be
# given (PKG=VERSION, e.g. through a build argument); when today's index no longer has that version, the
# build installs the current one and prints so, unless APT_STRICT_PINS=1. `make lint` checks every
# recipe against today's index (`make lint`: tools/validate_stack.py apt-recipes).
#
# The record: /usr/share/churnops/packages.txt lists every installed package and version (dpkg), the
# requested ones are printed in the build's output. APT_SIMULATE=1 resolves without installing (tests).
set -eu
[ "$#" -gt 0 ] || { echo "usage: apt-install PKG[=VERSION]..." >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
resolved=""
for spec in "$@"; do
  name=${spec%%=*}
  if [ "$name" != "$spec" ]; then
    version=${spec#*=}
    if apt-cache madison "$name" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$version"; then
      resolved="$resolved $spec"
    else
      current=$(apt-cache policy "$name" | awk '/Candidate:/ {print $2}')
      if [ -z "$current" ] || [ "$current" = "(none)" ]; then
        echo "apt-install: $name is not in today's index (check the package name)" >&2; exit 1
      fi
      if [ "${APT_STRICT_PINS:-0}" = 1 ]; then
        echo "apt-install: $name=$version is gone from the archive (today: $current); drop the pin or set it to $current" >&2
        exit 1
      fi
      echo "apt-install: $name=$version is gone from the archive; installing today's $current instead" >&2
      resolved="$resolved $name"
    fi
  else
    resolved="$resolved $spec"
  fi
done
if [ "${APT_SIMULATE:-0}" = 1 ]; then  # what would be installed, without installing (tests)
  echo "apt-install: resolved:$resolved"
  # shellcheck disable=SC2086
  apt-get install --simulate --yes --no-install-recommends $resolved
  exit $?
fi
# shellcheck disable=SC2086
apt-get install --yes -qq --no-install-recommends $resolved >/dev/null
rm -rf /var/lib/apt/lists/*
mkdir -p /usr/share/churnops
dpkg-query -W -f '${Package}=${Version}\n' | sort > /usr/share/churnops/packages.txt
for spec in $resolved; do
  name=${spec%%=*}
  echo "apt-install: installed $name=$(dpkg-query -W -f '${Version}' "$name")"
done
echo "apt-install: $(wc -l < /usr/share/churnops/packages.txt) packages recorded in /usr/share/churnops/packages.txt"
