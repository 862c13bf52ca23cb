"""Smoke test of a deployed service: ready, the model it serves, and one prediction of a held-out record.

    python -m load_tests.smoke        # SERVICE_URL, API_KEY / API_KEYS / STACK_ENV_FILE as in target.py
Waits up to SMOKE_TIMEOUT_SECONDS (default 120) for /ready; exits non-zero on any failure.
"""

from __future__ import annotations

import os
import sys
import time

import requests

from load_tests.payloads import held_out_records
from load_tests.target import api_key, service_url


def main() -> int:
    url, deadline = service_url(), time.monotonic() + float(os.environ.get("SMOKE_TIMEOUT_SECONDS", "120"))
    while True:
        try:
            ready = requests.get(f"{url}/ready", timeout=5)
            if ready.status_code == 200:
                break
            detail = f"HTTP {ready.status_code} {ready.text[:200]}"
        except requests.RequestException as exc:
            detail = str(exc)
        if time.monotonic() > deadline:
            print(f"smoke: FAILED: {url}/ready never answered 200 ({detail})")
            return 1
        time.sleep(2)
    record = held_out_records()[0]
    resp = requests.post(
        f"{url}/v1/predict", json={"records": [record]}, headers={"X-API-Key": api_key()}, timeout=10
    )
    if resp.status_code != 200:
        print(f"smoke: FAILED: predict answered HTTP {resp.status_code}: {resp.text[:300]}")
        return 1
    body = resp.json()
    print(f"smoke: ready, predict OK: {body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
