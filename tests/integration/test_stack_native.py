"""The stack's services natively (`make stack-native`: Procfile under honcho), end to end.

Brings the whole stack up on free loopback ports (PostgreSQL, Ceph RGW as S3, MLflow server, the service (granian),
monitor loop, Prometheus, Alertmanager), trains and gates a model into it, serves and predicts held-out
records, sends feedback and drifted traffic, and checks that the monitor sees it, that Prometheus scrapes
the service and the monitor, that the DataDrift alert travels Prometheus -> Alertmanager -> monitor
POST /alerts (with its bearer token) -> retrain trigger, and that every PromQL expression of the
dashboards and alert rules parses and returns data from this real Prometheus. Then it stops the stack
(a clean exit, its output in STACK_DIR/logs), starts it again on the same STACK_DIR and checks that it
serves the same champion, and tears everything down.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import FAST_TRAINING, REPO, free_port, require_server
from tests.support.dashboard_queries import promql_problems, sql_problems

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORT_NAMES = ("PG", "S3", "S3_MON", "MLFLOW", "SERVICE", "MONITOR", "PROMETHEUS", "ALERTMANAGER")
# Expressions that have data only after something went wrong (a 5xx, a failed reload): they must parse,
# and the metric they select must exist, but an empty answer is the healthy one.


def _wait(what: str, probe, timeout: float, log: Path | None = None, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            result = probe()
            if result:
                return result
        except (requests.RequestException, OSError) as exc:
            last = exc
        time.sleep(1)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what} ({last})\n--- stack log tail ---\n{tail}")


def _loaded_workers(service_url: str) -> float:
    """Workers with a model loaded, from the service's own /metrics (0 while it does not answer)."""
    try:
        text = requests.get(f"{service_url}/metrics", timeout=5).text
    except requests.RequestException:
        return 0.0
    found = re.search(r"^model_service_model_loaded(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _wait_model_version(url: str, key: str, version: str, timeout: float, log: Path) -> dict:
    """GET /v1/model answers `version` 4 times in a row (fresh connections, so both workers as a rule);
    a worker the gauge counted can still be restarted by the server on a loaded machine, so one answer is
    not taken on trust. On timeout: the last status and body, and the stack log."""
    deadline, streak, last = time.monotonic() + timeout, 0, None
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{url}/v1/model", headers={"X-API-Key": key}, timeout=10)
            last = (answer.status_code, answer.text[:500])
            body = answer.json() if answer.status_code == 200 else {}
        except (requests.RequestException, ValueError) as exc:
            last, body = repr(exc), {}
        streak = streak + 1 if body.get("version") == version else 0
        if streak >= 4:
            return body
        time.sleep(0.25 if streak else 1)
    tail = log.read_text()[-4000:] if log.exists() else ""
    raise AssertionError(f"GET /v1/model did not answer v{version} 4 times in a row: {last}\n{tail}")


def _ok(url: str) -> bool:
    return requests.get(url, timeout=3).status_code == 200


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "operations", "native-stack", "up"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGTERM)  # honcho stops every child on SIGTERM
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


@pytest.fixture(scope="module")
def stack():
    missing = [
        name
        for name, present in {
            "PostgreSQL 15 (apt-get install postgresql)": Path("/usr/lib/postgresql/15/bin/initdb").exists(),
            "prometheus (apt-get install prometheus)": shutil.which("prometheus"),
            "prometheus-alertmanager (apt-get install prometheus-alertmanager)": shutil.which(
                "prometheus-alertmanager"
            ),
            "honcho (dev extras)": Path(sys.executable).with_name("honcho").exists(),
            "Ceph (apt-get install ceph-mon ceph-mgr ceph-osd radosgw ceph-common)": shutil.which("radosgw"),
        }.items()
        if not present
    ]
    if missing:
        require_server(", ".join(missing))
    # not under pytest's tmp (mode 700): the postgres user must reach its data folder
    root = Path(tempfile.mkdtemp(prefix="churnops-stack-"))
    root.chmod(0o755)
    env = {
        **os.environ,
        "STACK_DIR": str(root),
        **{f"NATIVE_{name}_PORT": str(free_port()) for name in PORT_NAMES},
        "NATIVE_SCRAPE_INTERVAL": "1s",
        "MONITOR_INTERVAL_SECONDS": "4",
        "MONITOR_MIN_WINDOW": "100",
        "MONITOR_WINDOW_SIZE": "300",
        "MONITOR_WINDOW_MINUTES": "0",
        "QUALITY_MIN_LABELLED": "50",
        "RELOAD_INTERVAL_SECONDS": "2",
        "RETRAIN_TRIGGER": "log",
        "SERVICE_WORKERS": "2",
        **FAST_TRAINING,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = root / "stack.log"
    proc = _start(env, log)
    settings = dict(
        line.split("=", 1)
        for line in subprocess.run(
            [sys.executable, "-m", "operations", "native-stack", "env"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    )
    info = {"env": env, "settings": settings, "root": root, "log": log, "proc": proc}
    try:
        _wait("MLflow", lambda: _ok(f"{settings['MLFLOW_TRACKING_URI']}/health"), 180, log, proc)
        _wait(
            "Prometheus",
            lambda: _ok(f"http://127.0.0.1:{env['NATIVE_PROMETHEUS_PORT']}/-/ready"),
            60,
            log,
            proc,
        )
        _wait(
            "Alertmanager",
            lambda: _ok(f"http://127.0.0.1:{env['NATIVE_ALERTMANAGER_PORT']}/-/ready"),
            60,
            log,
        )
        _wait(
            "monitor", lambda: _ok(f"http://127.0.0.1:{env['NATIVE_MONITOR_PORT']}/healthz"), 120, log, proc
        )
        _wait("service", lambda: _ok(f"{settings['SERVICE_URL']}/health"), 120, log, proc)
        yield info
    finally:
        proc = info["proc"]  # the test restarts the stack
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                _stop(proc)
        still = []
        for name in PORT_NAMES:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(env[f"NATIVE_{name}_PORT"]))) == 0:
                    still.append(name)
        assert not still, f"still listening after teardown: {still}"
        shutil.rmtree(root, ignore_errors=True)


def _job_env(stack) -> dict[str, str]:
    return {**stack["env"], **stack["settings"]}


def _run(stack, *args: str, timeout: float = 900) -> str:
    out = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=_job_env(stack),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _prom(stack, query: str) -> dict:
    url = f"http://127.0.0.1:{stack['env']['NATIVE_PROMETHEUS_PORT']}/api/v1/query"
    return requests.get(url, params={"query": query}, timeout=10).json()


def _test_frame(stack):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(stack["settings"]["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(stack["settings"]["MLFLOW_TRACKING_URI"])
    version = MlflowClient().get_model_version_by_alias(stack["settings"]["MODEL_NAME"], "champion")
    path = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path="data/test.parquet", dst_path=str(stack["root"] / "downloads")
    )
    return pd.read_parquet(path)


def _records(frame) -> list[dict]:
    features = frame.drop(columns=[c for c in ("label", "score") if c in frame.columns])
    return [
        {k: (None if v != v else v) for k, v in row.items()} for row in features.to_dict(orient="records")
    ]


def _predict(stack, records: list[dict]) -> list[str]:
    url, key = stack["settings"]["SERVICE_URL"], stack["settings"]["API_KEYS"]
    ids = []
    for start in range(0, len(records), 50):
        resp = requests.post(
            f"{url}/v1/predict",
            json={"records": records[start : start + 50]},
            headers={"X-API-Key": key},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        ids.append(resp.json()["request_id"])
    return ids


def _db(stack, sql: str, url_setting: str = "DATABASE_URL") -> list:
    import sqlalchemy as sa

    engine = sa.create_engine(stack["settings"][url_setting])
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    finally:
        engine.dispose()


def test_native_stack_end_to_end(stack) -> None:
    settings = stack["settings"]

    # train and gate into the stack (MLflow on PostgreSQL, artifacts proxied to the S3 server)
    for module in ("training.data", "training.validate", "training.train", "training.gate"):
        _run(stack, "-m", module, *(["ingest"] if module == "training.data" else []))

    # the service picks the champion up by itself, in every worker: each polls the registry on its own,
    # so one ready answer says only that the worker that answered has loaded it; the multiprocess gauge
    # model_service_model_loaded sums the live workers that have
    workers = int(settings.get("SERVICE_WORKERS") or stack["env"].get("SERVICE_WORKERS") or 2)
    _wait(
        f"all {workers} service workers serving a model (model_service_model_loaded)",
        lambda: _loaded_workers(settings["SERVICE_URL"]) >= workers,
        120,
        stack["log"],
    )
    _wait_model_version(settings["SERVICE_URL"], settings["API_KEYS"], "1", 60, stack["log"])

    # held-out traffic, with feedback labels for part of it
    frame = _test_frame(stack)
    normal = frame.sample(n=min(300, len(frame)), random_state=1).reset_index(drop=True)
    ids = _predict(stack, _records(normal))
    url, key = settings["SERVICE_URL"], settings["API_KEYS"]
    for i in range(100):
        resp = requests.post(
            f"{url}/v1/feedback",
            headers={"X-API-Key": key},
            timeout=10,
            json={"request_id": ids[i // 50], "record_index": i % 50, "label": int(normal.loc[i, "label"])},
        )
        assert resp.status_code == 201, resp.text

    # the monitor loop checks the window (Postgres history, S3 report, metrics)
    def monitored():
        rows = _db(
            stack,
            "SELECT status, reason, report_uri FROM monitoring_runs WHERE status IN ('ok', 'drift', 'error') "
            "ORDER BY id DESC LIMIT 1",
        )
        return rows[0] if rows else None

    status, reason, report = _wait("a monitoring run", monitored, 120, stack["log"])
    assert status in ("ok", "drift"), f"{status}: {reason}"
    assert report and report.startswith("s3://monitoring/"), report

    # Prometheus scrapes the service and the monitor
    def scraped():
        data = _prom(stack, 'up{job=~"model-service|monitor"} == 1')["data"]["result"]
        return len(data) == 2 and _prom(stack, "flask_http_request_total")["data"]["result"]

    _wait("Prometheus scraping service and monitor", scraped, 60, stack["log"])

    # drifted traffic: the loop flags it, Prometheus fires DataDrift, Alertmanager calls POST /alerts
    drifted = normal.copy()
    drifted["tenure"] = 70.0
    drifted["contract"] = "Two year"
    drifted["monthly_charges"] = drifted["monthly_charges"] * 1.8
    drifted["total_charges"] = drifted["monthly_charges"] * 70
    drifted["internet_service"] = "Fiber optic"
    drifted["payment_method"] = "Mailed check"
    drift_ids = _predict(stack, _records(drifted))
    for i in range(100):  # labelled too, so that live quality is measured on the drifted window
        requests.post(
            f"{url}/v1/feedback",
            headers={"X-API-Key": key},
            timeout=10,
            json={
                "request_id": drift_ids[i // 50],
                "record_index": i % 50,
                "label": int(drifted.loc[i, "label"]),
            },
        ).raise_for_status()
    _wait(
        "drift in the monitor's metrics",
        lambda: (
            float(
                (_prom(stack, "max(monitor_drift_level)")["data"]["result"] or [{"value": [0, "0"]}])[0][
                    "value"
                ][1]
            )
            >= 2
        ),
        120,
        stack["log"],
    )
    events = _wait(
        "an Alertmanager alert reaching the retrain trigger",
        lambda: _db(stack, "SELECT status, reason FROM trigger_events WHERE source = 'alertmanager'"),
        120,
        stack["log"],
    )
    assert any("DataDrift" in reason for _, reason in events), events

    # every PromQL expression of the dashboards and alert rules parses and returns data here
    _, problems = promql_problems(lambda expr: _prom(stack, expr))
    assert not problems, "\n".join(problems)
    # and every SQL query of the dashboards runs on its database (the data sources churn-db, mlflow-db)
    databases = {"churn-db": "DATABASE_URL", "mlflow-db": "MLFLOW_BACKEND_STORE_URI"}
    checked, problems = sql_problems(lambda uid, sql: _db(stack, sql, databases[uid]))
    assert checked >= 8 and not problems, "\n".join(problems)

    # stop (a clean exit, the output kept in STACK_DIR/logs) and start again on the same STACK_DIR: the
    # registry (PostgreSQL) and its artifacts (on disk) both survive, so the champion serves again, and
    # the monitor's report is still in the S3 server (Ceph RGW, its data in STACK_DIR/s3)
    read_report = (
        "import sys; from monitoring import reports; from monitoring.settings import MonitorSettings; "
        "page = reports.load(MonitorSettings.from_env(), sys.argv[1]); print(len(page))"
    )
    size = int(_run(stack, "-c", read_report, report).strip().splitlines()[-1])
    assert size > 1000, size
    assert _stop(stack["proc"]) == 0
    assert "service" in (stack["root"] / "logs" / "stack.log").read_text()
    stack["proc"] = _start(stack["env"], stack["log"])
    _wait(
        f"all {workers} restarted service workers serving a model",
        lambda: _loaded_workers(settings["SERVICE_URL"]) >= workers,
        180,
        stack["log"],
        stack["proc"],
    )
    _wait_model_version(url, key, "1", 60, stack["log"])
    assert len(_predict(stack, _records(normal.head(50)))) == 1
    assert int(_run(stack, "-c", read_report, report).strip().splitlines()[-1]) == size
