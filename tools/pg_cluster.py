"""A throwaway PostgreSQL 15 cluster (Debian's postgresql-common tools) on a loopback port, trusting
loopback connections (it holds no data worth a password): the tests' `postgres_server` and the benches."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def installed() -> bool:
    return bool(shutil.which("pg_createcluster")) and Path("/usr/lib/postgresql/15/bin/postgres").exists()


def create(name: str, port: int) -> str | None:
    """Create cluster `name` on `port` (not started); None, or why it could not be made."""
    made = subprocess.run(
        ["pg_createcluster", "15", name, "-p", str(port), "--", "--auth-local=trust", "--auth-host=trust"],
        capture_output=True,
        text=True,
    )
    return None if made.returncode == 0 else f"pg_createcluster failed: {made.stderr.strip()[:200]}"


def start(name: str) -> None:
    subprocess.run(["pg_ctlcluster", "15", name, "start"], check=True, capture_output=True)


def drop(name: str) -> None:
    subprocess.run(["pg_dropcluster", "15", name, "--stop"], capture_output=True)
