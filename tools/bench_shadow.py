"""The cost of shadow scoring: `make bench-shadow` (p50/p99 of /v1/predict at SHADOW_SHARE 0, 0.1, 1).

In a fresh state folder (BENCH_STATE_DIR, default var/bench-shadow, emptied first): trains v1 and gates
it (the champion), trains v2 (the challenger, not promoted; the demo's small budget: 3 trials x 2
folds), then for each shadow share starts the service (granian, SERVICE_WORKERS workers) with
SHADOW_SHARE set, drives it with wrk (one record per request, BENCH_CONNECTIONS connections,
BENCH_SECONDS seconds; BENCH_ROUNDS runs per share, in alternating order) and counts the shadow records it wrote. Writes the table under
`## Shadow scoring` in docs/benchmarks.md and prints it. Needs wrk (`apt-get install wrk`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from operations.waiting import free_port, wait_http
from tools.bench_report import update_section
from tools.bench_serve import RECORD, stop, wrk

REPO = Path(__file__).resolve().parent.parent
SHARES = (0.0, 0.1, 1.0)


def run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as out:
        code = subprocess.call(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code} (log {log})")


def main() -> int:
    if not shutil.which("wrk"):
        print("bench-shadow: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    state = Path(os.environ.get("BENCH_STATE_DIR") or REPO / "var" / "bench-shadow").resolve()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    seconds = int(os.environ.get("BENCH_SECONDS", "10"))
    conns = int(os.environ.get("BENCH_CONNECTIONS", "4"))
    workers = os.environ.get("SERVICE_WORKERS", "2")
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "MLFLOW_TRACKING_URI", "DATA_DIR")
        },
        "STATE_DIR": str(state),
        "OPTUNA_TRIALS": os.environ.get("OPTUNA_TRIALS", "3"),
        "CV_FOLDS": os.environ.get("CV_FOLDS", "2"),
        "TRAIN_THREADS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "LOG_LEVEL": "WARNING",
    }
    py = sys.executable
    run([py, "-m", "training.train"], env, state / "train-v1.log")
    run([py, "-m", "training.gate"], env, state / "gate-v1.log")
    run([py, "-m", "training.train"], env, state / "train-v2.log")  # the challenger, not gated
    key = secrets.token_hex(16)
    body = json.dumps({"records": [RECORD]})
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    # the shares in alternating order (0, 10, 100, 100, 10, 0, ...): a neighbour's load that comes and
    # goes falls on every share, not on one
    order = [share for r in range(rounds) for share in (SHARES if r % 2 == 0 else SHARES[::-1])]
    rows = []
    for share in order:
        port = free_port()
        work = Path(tempfile.mkdtemp(prefix="bench-shadow-", dir=state))
        server_env = {
            **env,
            "PORT": str(port),
            "API_KEYS": key,
            "SERVICE_WORKERS": workers,
            "SHADOW_SHARE": str(share),
            "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
            "SPOOL_DIR": str(work / "spool"),
        }
        proc = subprocess.Popen(
            [
                py,
                "-m",
                "model_service.server",
            ],
            cwd=REPO,
            env=server_env,
            stdout=(work / "service.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/ready", 180, proc)
            time.sleep(5)  # every worker has loaded the champion and, with a share, the challenger
            engine = sa.create_engine(f"sqlite:///{state / 'service' / 'service.db'}")
            with engine.connect() as conn:
                before = conn.execute(sa.text("SELECT count(*) FROM shadow_predictions")).scalar()
            result = wrk(
                f"http://127.0.0.1:{port}/v1/predict", body, {"X-API-Key": key}, work, seconds, conns, 2
            )
        finally:
            stop(proc)
        with engine.connect() as conn:
            shadowed = conn.execute(sa.text("SELECT count(*) FROM shadow_predictions")).scalar() - before
        rows.append((share, result, shadowed))
        print(
            f"shadow {share:.0%}: {result['rps']:.0f} req/s, p50 {result['p50'] / 1000:.2f} ms, "
            f"p99 {result['p99'] / 1000:.2f} ms, {shadowed} shadow records",
            flush=True,
        )
    table = [
        "| shadow share | run | requests/s | p50 (ms) | p99 (ms) | non-2xx | shadow records written |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for share in SHARES:
        for n, (_, r, shadowed) in enumerate(row for row in rows if row[0] == share):
            table.append(
                f"| {share:.0%} | {n + 1} | {r['rps']:.0f} | {r['p50'] / 1000:.2f} | {r['p99'] / 1000:.2f} | "
                f"{int(r['non2xx'])} | {shadowed} |"
            )
    text = "\n".join(table) + (
        f"\n\n`make bench-shadow`: the service (granian, {workers} workers) with a champion (XGBoost, "
        f"v1) and a challenger (v2, also XGBoost) and SHADOW_SHARE at each share; wrk with one record per "
        f"request, {conns} connections, {seconds} s each, {rounds} runs per share in alternating order. The challenger scores off the request path (a "
        "background thread per worker, after the champion answered), so its cost shows as CPU taken from "
        "the requests, not as a step of them. One run on a shared 2-core machine: read orders of magnitude."
    )
    update_section("Shadow scoring", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
