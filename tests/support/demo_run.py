"""Run `churnops demo` (with its options) in a fresh DEMO_DIR, as a user would, and read its timeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_demo(state: Path, *args: str) -> tuple[dict, float]:
    """The demo's timeline (demo-timeline.json, checked passed) and its seconds in all. The environment's
    MLflow, database and data settings are dropped: the demo derives them all from its DEMO_DIR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_URL", "DATA_DIR"))}
    env["DEMO_DIR"] = str(state)
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "operations", "demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.time() - started
    print(out.stdout[-4000:])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    timeline = json.loads((state / "demo-timeline.json").read_text())
    assert timeline["passed"] is True and timeline["failure"] is None
    return timeline, elapsed
