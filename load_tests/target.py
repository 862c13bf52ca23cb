"""Where the deployed service is and which API key to use (smoke and load tests).

SERVICE_URL (default http://127.0.0.1:8000); the key from API_KEY, else the first of API_KEYS, else
the first of API_KEYS in STACK_ENV_FILE (the stack's .env, a Jenkins secret file in the pipeline).
"""

from __future__ import annotations

import os
from pathlib import Path


def service_url() -> str:
    return os.environ.get("SERVICE_URL", "http://127.0.0.1:8000").rstrip("/")


def _env_file_value(path: Path, name: str) -> str:
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.split(" #", 1)[0].strip().strip("'\"")
    return ""


def api_key() -> str:
    if os.environ.get("API_KEY"):
        return os.environ["API_KEY"]
    keys = os.environ.get("API_KEYS", "")
    if not keys and os.environ.get("STACK_ENV_FILE") and Path(os.environ["STACK_ENV_FILE"]).is_file():
        keys = _env_file_value(Path(os.environ["STACK_ENV_FILE"]), "API_KEYS")
    return keys.split(",")[0].strip()
