#!/usr/bin/env bash
# Roll the champion back to the previous version (or VERSION) and wait until the service serves it.
# Usage: scripts/rollback.sh [VERSION] [--reason TEXT] [--timeout SECONDS] [--no-wait]
# Environment: MLFLOW_TRACKING_URI, MODEL_NAME, DATABASE_URL, SERVICE_URL, ADMIN_TOKEN (see monitoring/settings.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -m scripts.rollback "$@"
