#!/usr/bin/env bash
# The virtual environment MLServer runs in for `make bench-serve`: ${MLSERVER_VENV:-var/venvs/mlserver},
# created with `python -m venv` and tools/mlserver-requirements.txt installed into it. Never the project's
# .venv or requirements.lock (mlserver pins versions the project does not use). Idempotent: skipped when
# the venv exists and was built from the same requirements (their sha256 in .requirements-sha256).
set -euo pipefail

cd "$(dirname "$0")/.."
req=tools/mlserver-requirements.txt
venv=${MLSERVER_VENV:-${STATE_DIR:-var}/venvs/mlserver}
python=${PYTHON:-python3}
want=$(sha256sum "$req" | cut -d' ' -f1)
stamp="$venv/.requirements-sha256"

if [ -x "$venv/bin/mlserver" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "building $venv from $req (mlserver and the champion's libraries, about 2 minutes)"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -r "$req"
echo "$want" >"$stamp"
echo "built $venv: $("$venv/bin/pip" list --format=freeze | grep -iE '^(mlserver|mlserver-mlflow|mlflow)==' | tr '\n' ' ')"
