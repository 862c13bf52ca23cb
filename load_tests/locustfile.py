"""Load test of the model service: single-record and batch predictions of held-out records.

Run headless (what `make load-test` does):
    locust -f load_tests/locustfile.py --headless --host "$SERVICE_URL" --csv var/reports/load-test/locust \
        --html var/reports/load-test/locust.html
Users, spawn rate, run time and batch size come from load_tests/thresholds.yaml unless given on the
command line. At the end the run is judged against the limits in the same file: Locust exits 1 when one
is crossed (the Jenkins stage fails), and a summary goes to LOAD_TEST_REPORT (JSON).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import yaml
from locust import HttpUser, between, events, task

from load_tests.payloads import held_out_records
from load_tests.target import api_key

THRESHOLDS = Path(os.environ.get("LOAD_TEST_THRESHOLDS", Path(__file__).with_name("thresholds.yaml")))
SPEC = yaml.safe_load(THRESHOLDS.read_text())
RUN = SPEC["run"]
RECORDS: list[dict] = []


@events.init.add_listener
def load_records(environment, **_kwargs) -> None:
    RECORDS.extend(held_out_records())
    if not RECORDS:
        raise RuntimeError("no held-out records to send")
    print(f"load test: {len(RECORDS)} held-out records, thresholds from {THRESHOLDS}")


class PredictUser(HttpUser):
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.client.headers.update({"X-API-Key": api_key(), "Content-Type": "application/json"})
        self.rng = random.Random()

    @task(RUN.get("single_weight", 9))
    def single(self) -> None:
        self._predict([self.rng.choice(RECORDS)], "single")

    @task(RUN.get("batch_weight", 1))
    def batch(self) -> None:
        size = min(int(RUN.get("batch_size", 100)), len(RECORDS))
        self._predict(self.rng.sample(RECORDS, size), "batch")

    def _predict(self, records: list[dict], name: str) -> None:
        with self.client.post(
            "/v1/predict", json={"records": records}, name=name, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            body = resp.json()
            answers = body.get("predictions") or body.get("results") or []
            if len(answers) != len(records):
                resp.failure(f"{len(answers)} answers for {len(records)} records")


def judge(stats, limits: dict) -> tuple[bool, dict]:
    """Compare the run's statistics with the limits; returns (passed, summary)."""
    checks, summary = [], {}
    entries = {
        "total": stats.total,
        "single": stats.get("single", "POST"),
        "batch": stats.get("batch", "POST"),
    }
    for name, entry in entries.items():
        row = {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "failure_ratio": entry.fail_ratio,
            "p50_ms": entry.get_response_time_percentile(0.5) or 0,
            "p95_ms": entry.get_response_time_percentile(0.95) or 0,
            "p99_ms": entry.get_response_time_percentile(0.99) or 0,
            "rps": entry.total_rps,
        }
        summary[name] = row
        rule = limits.get(name, {})
        if "max_failure_ratio" in rule:
            checks.append((f"{name} failure ratio", row["failure_ratio"], rule["max_failure_ratio"]))
        if "p95_ms" in rule:
            checks.append((f"{name} p95 ms", row["p95_ms"], rule["p95_ms"]))
    failed = [f"{what} {value:.4g} > {limit}" for what, value, limit in checks if value > limit]
    if summary["total"]["requests"] < limits.get("min_requests", 1):
        failed.append(f"only {summary['total']['requests']} requests (< {limits['min_requests']})")
    summary["failed_checks"] = failed
    summary["limits"] = limits
    return not failed, summary


@events.quitting.add_listener
def check_thresholds(environment, **_kwargs) -> None:
    passed, summary = judge(environment.stats, SPEC["limits"])
    report = os.environ.get("LOAD_TEST_REPORT")
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    for name in ("total", "single", "batch"):
        row = summary[name]
        print(
            f"load test {name:>6}: {row['requests']} requests, {row['failures']} failed, "
            f"p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, {row['rps']:.1f} req/s"
        )
    if passed:
        print("load test: PASSED (thresholds in " + str(THRESHOLDS) + ")")
    else:
        print("load test: FAILED: " + "; ".join(summary["failed_checks"]))
        environment.process_exit_code = 1
