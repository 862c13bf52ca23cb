"""The monitor: `python -m monitoring.monitor run` (one check, `make monitor`) or `... loop`.

One check:
1. finds the champion in the registry and loads the reference sample logged with its training run
   (`reference/reference.parquet`: valid-split features, label and out-of-sample score) and its
   threshold;
2. reads the window: the most recent MONITOR_WINDOW_SIZE predictions served by that version within
   MONITOR_WINDOW_MINUTES, with their feedback labels where they came back;
3. below MONITOR_MIN_WINDOW records it records a `skipped` run with the reason and stops;
4. otherwise computes drift and live quality (monitoring.drift), saves Evidently's HTML report to the
   reports store, writes a `monitoring_runs` row linking it, sets the Prometheus gauges, and when a
   threshold is crossed calls the retrain trigger (cooldown and dedupe apply).

`loop` runs a check every MONITOR_INTERVAL_SECONDS and serves, on MONITOR_METRICS_PORT:
`GET /metrics` (Prometheus), `GET /healthz`, and `POST /alerts`, an Alertmanager webhook receiver
that calls the same retrain trigger for each firing alert (dedupe key: the alert's name and labels).

Exit codes of `run`: 0 when the check ran (ok, drift or skipped), 1 on error, 3 with --fail-on-drift
when the check alarmed.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import registry, store
from core.dataset import DatasetConfig, load_config
from core.settings import load_or_exit
from monitoring import metrics, reports
from monitoring.drift import DriftResult, compute_drift
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger, TriggerEvent

log = logging.getLogger("monitoring.monitor")


@dataclass
class Champion:
    name: str
    version: str
    run_id: str
    threshold: float


@dataclass
class CheckOutcome:
    run_id: int
    status: str  # ok | drift | skipped | error
    reason: str
    version: str | None = None
    window: int = 0
    result: DriftResult | None = None
    report_uri: str | None = None
    trigger: TriggerEvent | None = None

    def line(self) -> str:
        out = f"monitoring run {self.run_id}: {self.status.upper()}"
        if self.version:
            out += f" (champion v{self.version}, window {self.window})"
        out += f": {self.reason}"
        if self.report_uri:
            out += f"\n  report: {self.report_uri}"
        if self.trigger is not None:
            out += (
                f"\n  retrain trigger: {self.trigger.status} ({self.trigger.backend}) {self.trigger.detail}"
            )
        return out


def champion(settings: MonitorSettings) -> Champion | None:
    mv = registry.version_by_alias(settings.model_name, registry.CHAMPION)
    if mv is None:
        return None
    threshold = mv.tags.get("threshold")
    if threshold is None:
        threshold = registry.model_metadata(settings.model_name, mv.version)["threshold"]
    return Champion(settings.model_name, str(mv.version), mv.run_id, float(threshold))


@lru_cache(maxsize=8)
def reference_of(run_id: str) -> pd.DataFrame:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reference/reference.parquet")
    return pd.read_parquet(path)


def read_window(
    engine: sa.Engine, model_name: str, version: str, size: int, minutes: float, now=None
) -> pd.DataFrame:
    """The most recent predictions of `version` (at most `size`, within `minutes`), with feedback labels."""
    return store.recent_predictions(engine, model_name, version, size, minutes, now)


def _figures(result: DriftResult) -> dict[str, Any]:
    return {
        "drift_share": result.drift_share,
        "drifted_features": [f.feature for f in result.features if f.drifted],
        "prediction_drift_score": result.prediction_score,
        "roc_auc": result.quality.get("roc_auc"),
        "recall": result.quality.get("recall"),
    }


def _export(settings: MonitorSettings, outcome: CheckOutcome) -> None:
    name = settings.model_name
    metrics.record_status(name, outcome.status)
    metrics.last_run.labels(name).set(time.time())
    metrics.window.labels(name).set(outcome.window)
    if outcome.version:
        metrics.model_version.clear()
        metrics.model_version.labels(name, outcome.version).set(1)
    r = outcome.result
    if r is None:
        return
    metrics.drift_share.labels(name).set(r.drift_share)
    metrics.drifted_features.labels(name).set(r.drifted_count)
    metrics.feature_drift.clear()
    for f in r.features:
        if not np.isnan(f.score):
            metrics.feature_drift.labels(name, f.feature, f.method, str(f.threshold)).set(f.score)
        metrics.feature_drifted.labels(name, f.feature).set(int(f.drifted))
    metrics.prediction_drift.clear()
    if not np.isnan(r.prediction_score):
        metrics.prediction_drift.labels(name, r.prediction_method, str(r.prediction_threshold)).set(
            r.prediction_score
        )
    metrics.alarm.labels(name).set(int(r.alarm))
    metrics.labelled.labels(name).set(int(r.quality.get("n_labelled") or 0))
    for key in ("roc_auc", "precision", "recall", "f1"):
        value = r.quality.get(key)
        if value is not None:
            metrics.quality.labels(name, key).set(value)


def _clean(value: Any) -> Any:
    """JSON-safe (NaN -> None) for the details column."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and (np.isnan(value) or np.isinf(value)):
        return None
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def run_once(
    settings: MonitorSettings,
    config: DatasetConfig | None = None,
    *,
    trigger: RetrainTrigger | None = None,
    summary_table: bool = True,
    now=None,
) -> CheckOutcome:
    config = config or load_config(settings.dataset_config)
    engine = store.engine_for(settings.database_url)
    runs = store.monitoring_runs
    started = store.utcnow()
    with engine.begin() as conn:
        run_id = conn.execute(
            runs.insert().values(
                started_at=started, status="running", model_name=settings.model_name, alarm=False
            )
        ).inserted_primary_key[0]
    outcome = CheckOutcome(run_id, "error", "")
    values: dict[str, Any] = {}
    try:
        registry.connect(settings.tracking_uri)
        champ = champion(settings)
        if champ is None:
            outcome.status, outcome.reason = "skipped", f"model '{settings.model_name}' has no champion yet"
            return outcome
        outcome.version = champ.version
        window = read_window(
            engine, settings.model_name, champ.version, settings.window_size, settings.window_minutes, now
        )
        outcome.window = len(window)
        span = f"the last {settings.window_minutes:g} min" if settings.window_minutes > 0 else "all time"
        values.update(model_version=champ.version, window_size=len(window))
        if len(window):
            values.update(window_start=window["created_at"].min(), window_end=window["created_at"].max())
        if len(window) < settings.min_window:
            outcome.status = "skipped"
            outcome.reason = (
                f"window too small: {len(window)} predictions by v{champ.version} in {span}, "
                f"minimum {settings.min_window} (MONITOR_MIN_WINDOW); no drift judged"
            )
            return outcome
        reference = reference_of(champ.run_id)
        result = compute_drift(
            reference,
            window,
            config,
            settings.drift,
            settings.quality,
            champ.threshold,
            summary_table=summary_table,
        )
        outcome.result = result
        outcome.status = "drift" if result.alarm else "ok"
        outcome.reason = (
            ("; ".join(result.reasons) if result.alarm else "no threshold crossed")
            + " -- "
            + result.summary()
        )
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp) / "report.html"
            result.report.save_html(str(html))
            name = f"{settings.model_name}-run{run_id:06d}-{started:%Y%m%dT%H%M%SZ}.html"
            outcome.report_uri = reports.save(settings, name, html.read_bytes())
        q = result.quality
        values.update(
            reference_size=result.n_reference,
            drift_share=result.drift_share,
            drifted_features=result.drifted_count,
            n_features=len(result.features),
            dataset_drift=result.dataset_drift,
            prediction_drift_score=None if np.isnan(result.prediction_score) else result.prediction_score,
            prediction_drift=result.prediction_drift,
            n_labelled=q.get("n_labelled"),
            roc_auc=q.get("roc_auc"),
            precision=q.get("precision"),
            recall=q.get("recall"),
            f1=q.get("f1"),
            alarm=result.alarm,
            alarm_reasons=result.reasons,
            details=_clean(result.details()),
            report_uri=outcome.report_uri,
        )
        if result.alarm:
            trigger = trigger or RetrainTrigger(settings)
            # the dedupe key names what crossed (not its figures), so the same drift seen on every run
            # within the dedupe window fires once
            key = f"monitor:{settings.model_name}:v{champ.version}:" + ",".join(sorted(result.kinds))
            outcome.trigger = trigger.fire(
                "; ".join(result.reasons),
                source="monitor",
                dedupe_key=key,
                monitoring_run_id=run_id,
                figures=_figures(result),
            )
            values["trigger_event_id"] = outcome.trigger.id
            metrics.triggers.labels(
                settings.model_name, outcome.trigger.backend, outcome.trigger.status, "monitor"
            ).inc()
        return outcome
    except Exception as exc:  # noqa: BLE001 - recorded in the history row and reported
        log.exception("monitoring run %s failed", run_id)
        outcome.status, outcome.reason = "error", f"{type(exc).__name__}: {exc}"[:2000]
        return outcome
    finally:
        with engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(finished_at=store.utcnow(), status=outcome.status, reason=outcome.reason, **values)
            )
        _export(settings, outcome)


# --------------------------------------------------------------------------- loop + HTTP


def handle_alerts(payload: dict[str, Any], trigger: RetrainTrigger, model_name: str) -> list[TriggerEvent]:
    """Alertmanager webhook (version 4): one trigger call per firing alert; resolved alerts are ignored."""
    events = []
    for alert in payload.get("alerts") or []:
        status = alert.get("status") or payload.get("status") or "firing"
        metrics.alerts_received.labels(status).inc()
        if status != "firing":
            continue
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        name = labels.get("alertname", "alert")
        reason = f"alert {name}: " + (
            annotations.get("summary") or annotations.get("description") or "firing"
        )
        key = (
            "alert:"
            + name
            + ":"
            + ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
        )
        event = trigger.fire(reason, source="alertmanager", dedupe_key=key)
        metrics.triggers.labels(model_name, event.backend, event.status, "alertmanager").inc()
        events.append(event)
    return events


def make_server(
    settings: MonitorSettings, trigger: RetrainTrigger, host: str | None = None
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                self._send(200, b'{"status": "ok"}')
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:  # noqa: N802
            if not self.path.startswith("/alerts"):
                self._send(404, b'{"error": "not found"}')
                return
            if not settings.webhook_token:
                log.warning("POST /alerts refused: MONITOR_WEBHOOK_TOKEN is not set (the webhook is closed)")
                self._send(503, b'{"error": "webhook disabled: MONITOR_WEBHOOK_TOKEN is not set"}')
                return
            sent = self.headers.get("Authorization") or ""
            if not hmac.compare_digest(sent.encode(), f"Bearer {settings.webhook_token}".encode()):
                log.warning("POST /alerts refused: bad or missing bearer token")
                self._send(401, b'{"error": "bad or missing bearer token"}')
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
            except (ValueError, json.JSONDecodeError):
                self._send(400, b'{"error": "body is not JSON"}')
                return
            events = handle_alerts(payload, trigger, settings.model_name)
            body = {
                "events": [
                    {"id": e.id, "status": e.status, "backend": e.backend, "detail": e.detail} for e in events
                ]
            }
            self._send(200, json.dumps(body).encode())

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("http: " + fmt, *args)

    return ThreadingHTTPServer((host or settings.metrics_host, settings.metrics_port), Handler)


def loop(settings: MonitorSettings, iterations: int | None = None) -> int:
    config = load_config(settings.dataset_config)
    trigger = RetrainTrigger(settings)
    server = make_server(settings, trigger)
    thread = threading.Thread(target=server.serve_forever, name="monitor-http", daemon=True)
    thread.start()
    log.info(
        "monitor loop: every %ss; metrics and /alerts on %s:%s",
        settings.interval_seconds,
        settings.metrics_host,
        server.server_address[1],
    )
    if not settings.webhook_token:
        log.warning("MONITOR_WEBHOOK_TOKEN is not set: POST /alerts refuses every call (503)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    done = 0
    try:
        while not stop.is_set():
            outcome = run_once(settings, config, trigger=trigger)
            print(outcome.line(), flush=True)
            done += 1
            if iterations is not None and done >= iterations:
                break
            stop.wait(settings.interval_seconds)
    finally:
        server.shutdown()
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.monitor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one check")
    run.add_argument("--fail-on-drift", action="store_true", help="exit 3 when the check alarms")
    run.add_argument(
        "--fast", action="store_true", help="leave the DataDriftPreset summary table out of the report"
    )
    lp = sub.add_parser("loop", help="a check every MONITOR_INTERVAL_SECONDS, with /metrics and POST /alerts")
    lp.add_argument("--iterations", type=int, help="stop after this many checks (tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    settings = load_or_exit(MonitorSettings)
    if args.command == "loop":
        return loop(settings, args.iterations)
    outcome = run_once(settings, summary_table=not args.fast)
    print(outcome.line(), flush=True)
    if outcome.status == "error":
        return 1
    return 3 if args.fail_on_drift and outcome.status == "drift" else 0


if __name__ == "__main__":
    sys.exit(main())
