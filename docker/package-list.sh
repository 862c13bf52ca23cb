#!/usr/bin/env bash
# docker/package-list.sh IMAGE NAME: what Debian packages IMAGE holds, from the record docker/apt-install.sh
# wrote into it (/usr/share/churnops/packages.txt), copied to $PACKAGE_LIST_DIR/NAME.packages.txt
# (default var/images) and summed up in one line of the build's output. Recipes pin no Debian versions,
# so this record is what says which versions a build got.
set -euo pipefail
image=$1 name=$2
dir="${PACKAGE_LIST_DIR:-var/images}"
mkdir -p "$dir"
out="$dir/$name.packages.txt"
if ! docker run --rm --entrypoint cat "$image" /usr/share/churnops/packages.txt > "$out" 2>/dev/null || [ ! -s "$out" ]; then
  echo "packages: $name: no record in $image (not built with docker/apt-install.sh)" >&2
  rm -f "$out"
  exit 1
fi
echo "packages: $name: $(wc -l < "$out") Debian packages recorded -> $out"
