"""The Makefile: every declared target has a rule, and `make load-test` takes its run from the file
LOAD_TEST_THRESHOLDS names."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO


def _makefile() -> str:
    return (REPO / "Makefile").read_text()


def test_every_phony_target_has_a_rule():
    text = _makefile().replace("\\\n", " ")
    declared = {name for line in re.findall(r"^\.PHONY:(.*)$", text, re.M) for name in line.split()}
    rules = set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.M))
    assert declared and declared - rules == set()


def test_load_test_reads_its_run_from_the_thresholds_file_it_is_given(tmp_path):
    limits = tmp_path / "limits.yaml"
    limits.write_text("run: {users: 7, spawn_rate: 3, run_time: 11s}\nlimits: {}\n")
    out = subprocess.run(
        ["make", "-n", "load-test", f"LOAD_TEST_THRESHOLDS={limits}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = out[out.index("locust") :]
    assert "thresholds.yaml" not in command
    assert command.count(str(limits)) == 3  # users, spawn rate, run time
