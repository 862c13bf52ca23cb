"""LOG_LEVEL and LOG_FORMAT reach every command through core.logs (issue 23): a record the command logs at
INFO is printed at LOG_LEVEL=INFO and not at WARNING; LOG_FORMAT=json turns the log lines into JSON
objects. Each command runs as a subprocess on a throwaway STATE_DIR, as an operator would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

# (command, a piece of the INFO record it logs) - a command each of the packages training and monitoring
COMMANDS = [
    (["-m", "training.data", "ingest"], "snapshot "),
    (
        ["-m", "monitoring.trigger", "fire", "--reason", "log level test", "--backend", "log"],
        "retrain trigger fired",
    ),
]


def _run(args: list[str], state, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "MLFLOW_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**clean, "STATE_DIR": str(state), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "marker"), COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_log_level_is_honoured(args, marker, tmp_path) -> None:
    loud = _run(args, tmp_path / "info", LOG_LEVEL="INFO")
    assert loud.returncode == 0, loud.stderr
    assert marker in loud.stdout + loud.stderr
    quiet = _run(args, tmp_path / "warning", LOG_LEVEL="WARNING")
    assert quiet.returncode == 0, quiet.stderr
    assert marker not in quiet.stdout + quiet.stderr
    assert " INFO " not in quiet.stdout + quiet.stderr


def test_log_format_json(tmp_path) -> None:
    out = _run(COMMANDS[1][0], tmp_path, LOG_LEVEL="INFO", LOG_FORMAT="json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    fired = [r for r in records if "retrain trigger fired" in r["message"]]
    assert fired and fired[0]["logger"] == "monitoring.trigger" and fired[0]["level"] == "INFO"


def test_a_bad_log_format_is_refused_in_one_line(tmp_path) -> None:
    out = _run(COMMANDS[1][0], tmp_path, LOG_FORMAT="yaml")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "LOG_FORMAT" in out.stderr
