#!/bin/sh
# Used by the images' build stages: install pyproject's dependencies (runtime, or runtime + dev) into
# the active venv, constrained by requirements.lock. The site's pip settings and CA bundle arrive as
# BuildKit secrets (/run/secrets/pipconf, /run/secrets/cacert) when the build passes them; they are read
# here and never copied into a layer.
set -eu
extras="${1:-runtime}"
python - "$extras" > /tmp/requirements.txt <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
if sys.argv[1] == "dev":
    deps += project["optional-dependencies"]["dev"]
print("\n".join(deps))
PY
if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi
if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi
pip install --no-cache-dir -c requirements.lock -r /tmp/requirements.txt
rm -f /tmp/requirements.txt
