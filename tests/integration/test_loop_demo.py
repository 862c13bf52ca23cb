"""`make demo` end to end: the whole closed loop on the embedded default (its time is printed, not
asserted: speed is measured by benchmarks, never by timed assertions); it settles after the heal, and the guard rolls a bad model forced past the gate back by itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_make_demo(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_URL", "DATA_DIR"))}
    env["DEMO_DIR"] = str(tmp_path / "demo")
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "scripts.demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    elapsed = time.time() - started
    print(out.stdout[-4000:])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "DEMO PASSED" in out.stdout
    for step in (
        "v1 gated and promoted",
        "service up, serving v1",
        ": ok",
        "drift onset",
        ": drift",
        "retrain triggered (local backend",
        "v2 served",
        "on v2 (the same drift, other records): ok: settled",
        "rollback to v1",
        "v1 served again",
        "post-promotion guard started",
        "FORCED past the gate (audited admin override)",
        "v1 served again: rolled back by the guard",
        "by guard",
        "blocked from promotion",
        "service stopped",
    ):
        assert step in out.stdout, step
    # the loop settles: one retrain, no second trigger held back by the cooldown
    assert re.search(r"retrain trigger decisions: 1 fired \(a retrain ran\); state", out.stdout)
    onset = float(re.search(r"drift onset -> v2 serving: ([\d.]+) s", out.stdout).group(1))
    healed = float(
        re.search(r"bad model forced -> good model serving again .*: ([\d.]+) s", out.stdout).group(1)
    )
    print(
        f"demo: {elapsed:.0f} s in all, drift onset -> v2 serving {onset:.0f} s, bad -> good {healed:.1f} s"
    )
