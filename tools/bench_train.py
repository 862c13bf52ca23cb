"""`make bench-train`: training wall time and peak memory, written to docs/benchmarks.md.

Runs `python -m training.train` as a child process on a throwaway embedded store (so the project's
own var/ is untouched), for the demo default and for a larger tuning budget, and reads the child's
peak resident memory from the kernel (getrusage of the waited-for child).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.bench_report import update_section

REPO = Path(__file__).resolve().parent.parent


def run_once(trials: int, folds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "OPTUNA_TRIALS": str(trials),
            "CV_FOLDS": str(folds),
            "DATA_DIR": f"{tmp}/data",
            "REPORTS_DIR": f"{tmp}/reports",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "MLFLOW_ARTIFACT_ROOT": f"{tmp}/artifacts",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.train"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves: rusage of this child alone
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"training failed:\n{out[-2000:]}")
        peak_mb = usage.ru_maxrss / 1024
        auc = re.search(r"test ROC AUC ([0-9.]+)", out)
        chosen = re.search(r"\(([a-z]+)\) as 'challenger'", out)
        return {
            "trials": trials,
            "folds": folds,
            "wall_s": wall,
            "peak_mb": peak_mb,
            "roc_auc": float(auc.group(1)) if auc else float("nan"),
            "chosen": chosen.group(1) if chosen else "?",
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budgets", default="2x2,15x3,40x5", help="trials x folds, comma-separated")
    args = parser.parse_args(argv)
    rows = []
    for budget in args.budgets.split(","):
        trials, folds = (int(x) for x in budget.split("x"))
        print(f"bench-train: {trials} trials x {folds} folds ...", flush=True)
        rows.append(run_once(trials, folds))
        print(f"  {rows[-1]}", flush=True)
    table = [
        "| Optuna trials x CV folds | wall time (s) | peak RSS (MB) | chosen model | test ROC AUC |",
        "|---|---:|---:|---|---:|",
    ]
    table += [
        f"| {r['trials']} x {r['folds']} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | {r['chosen']} | "
        f"{r['roc_auc']:.4f} |"
        for r in rows
    ]
    body = "\n".join(table) + (
        "\n\nOne `python -m training.train` process, end to end: ingest (snapshot already cached after the first"
        " run), validate, baseline, Optuna tuning of XGBoost (2 threads), threshold choice, evaluation and plots,"
        " MLflow logging and registration on a local SQLite store. Peak RSS is the child's maximum resident set"
        " (getrusage). `15 x 3` is the default of `make train`; `make demo` uses 3 x 2 and the tests 2 x 2."
    )
    print(f"wrote {update_section('Training', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
