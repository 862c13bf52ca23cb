"""The monitor: `python -m monitoring.monitor run` (one check, `make monitor`) or `... loop`.

One check:
1. finds the champion in the registry and loads the reference sample logged with its training run
   (`reference/reference.parquet`: valid-split features, label and out-of-sample score; for a retrained
   champion `reference/production.parquet`, the production window it was retrained for, named by its
   `reference_artifact` tag) and its threshold;
2. reads the window: the most recent MONITOR_WINDOW_SIZE predictions served by that version within
   MONITOR_WINDOW_MINUTES, with their feedback labels where they came back;
3. checks for new data since the champion was trained (labelled records, a changed source: the data
   set config's `retrain:` bounds; see check_freshness), which raises a retrain even when step 4 does
   not run; below MONITOR_MIN_WINDOW records it records a `skipped` run with the reason and stops;
4. otherwise computes drift and live quality (monitoring.drift), saves Evidently's HTML report to the
   reports store, writes a `monitoring_runs` row linking it, sets the Prometheus gauges, and when a
   threshold is crossed calls the retrain trigger (cooldown and dedupe apply).

`loop` runs a check every MONITOR_INTERVAL_SECONDS and serves, on MONITOR_METRICS_PORT:
`GET /metrics` (Prometheus), `GET /healthz`, and `POST /alerts`, an Alertmanager webhook receiver
that calls the same retrain trigger for each firing alert (dedupe key: the alert's name and labels).

`loop` also runs the post-promotion guard (monitoring.guard) every GUARD_INTERVAL_SECONDS
(GUARD_ENABLED): after a promotion it compares the new champion with the previous one and rolls back
on a breach.

`scheduled` (`make retrain-scheduled`; `loop` every RETRAIN_SCHEDULE_SECONDS) retrains only when there is
new data since the champion was trained, and records `nothing_new` otherwise.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import registry, store
from core.dataset import DatasetConfig, load_config
from core.drift import LEVELS, Calibration
from core.logs import setup_logging
from core.settings import load_or_exit
from core.source import DataError, source_hash
from monitoring import guard, metrics, reports
from monitoring.drift import DriftResult, compute_drift
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger, TriggerEvent, trigger_kinds

log = logging.getLogger("monitoring.monitor")


@dataclass
class Champion:
    name: str
    version: str
    run_id: str
    threshold: float
    trained_at: datetime | None = None  # the model version's creation time
    source_hash: str | None = None  # the hash of the source snapshot its data descends from
    reference: str = registry.REFERENCE_ARTIFACT  # its drift reference's artifact path


@dataclass
class Freshness:
    """New data since the champion was trained: labelled records, and whether the source changed."""

    new_labels: int | None = None  # None: not checked
    label_bound: int = 0
    source_hash: str | None = None  # the source's hash now (None: not checked)
    champion_source_hash: str | None = None
    data_age_seconds: float | None = None
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        return {
            "new_labels": self.new_labels,
            "source_hash": self.source_hash,
            "champion_source_hash": self.champion_source_hash,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.figures(),
            "label_bound": self.label_bound,
            "data_age_seconds": self.data_age_seconds,
            "reasons": self.reasons,
            "error": self.error,
        }


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
    freshness: Freshness | None = None

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
    created = getattr(mv, "creation_timestamp", None)
    return Champion(
        settings.model_name,
        str(mv.version),
        mv.run_id,
        float(threshold),
        trained_at=datetime.fromtimestamp(created / 1000, UTC) if created else None,
        # champions trained before `source_hash` was tagged: their data_hash (the ingested snapshot
        # for a first training; a retrained one then reads as changed once, see docs/monitoring.md)
        source_hash=mv.tags.get("source_hash") or mv.tags.get("data_hash") or None,
        reference=registry.reference_artifact(mv.tags),
    )


WAITING = "waiting_labels"


def waiting_for_labels(config: DatasetConfig, window: pd.DataFrame, kinds: list[str]) -> str | None:
    """Why an alarm does not start a retrain yet, or None. A drift or quality alarm comes as soon as the
    predictions do, but a retrain learns from their labels, which come back later: it waits until
    `retrain.min_labels` records of the checked window have their label. New data (enough new labels, a
    changed source) never waits."""
    need = config.retrain_min_labels
    if need <= 0 or any(k == "new_labels" or k.startswith("source_changed") for k in kinds):
        return None
    have = int(window["label"].notna().sum()) if "label" in window else 0
    if have >= need:
        return None
    return (
        f"waiting for labels: {have} of the {len(window)} checked records have their label, "
        f"retrain.min_labels {need}; a later check starts the retrain once they are in"
    )


def check_freshness(
    settings: MonitorSettings,
    config: DatasetConfig,
    champ: Champion,
    engine: sa.Engine,
    now=None,
    label_bound: int | None = None,
) -> Freshness:
    """Has new data arrived since the champion was trained? Bounds from the data set config's `retrain:`
    (new_labels: N labelled production records since then; on_source_change: the source's content
    differs from the champion's source snapshot)."""
    now = store.as_utc(now) if now is not None else store.utcnow()
    bound = config.retrain_new_labels if label_bound is None else label_bound
    out = Freshness(label_bound=bound, champion_source_hash=champ.source_hash)
    if champ.trained_at is not None:
        out.data_age_seconds = max(0.0, (now - champ.trained_at).total_seconds())
        out.new_labels = store.labelled_since(engine, settings.model_name, champ.trained_at)
        if out.label_bound > 0 and out.new_labels >= out.label_bound:
            out.kinds.append("new_labels")
            out.reasons.append(
                f"new data: {out.new_labels} labelled records since v{champ.version} was trained "
                f"(retrain.new_labels {out.label_bound})"
            )
    if config.retrain_on_source_change and champ.source_hash:
        try:
            out.source_hash = source_hash(config)
        except DataError as exc:
            out.error = f"source not readable: {exc}"[:500]
            log.warning("freshness: %s", out.error)
        if out.source_hash and out.source_hash != champ.source_hash:
            # the new hash in the kind: each distinct change of the source fires once
            out.kinds.append(f"source_changed:{out.source_hash[:12]}")
            out.reasons.append(
                f"new data: the source changed (now {out.source_hash[:12]}, v{champ.version} was trained "
                f"on {champ.source_hash[:12]})"
            )
    return out


@lru_cache(maxsize=8)
def reference_of(run_id: str, artifact: str = registry.REFERENCE_ARTIFACT) -> pd.DataFrame:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    return pd.read_parquet(path)


@lru_cache(maxsize=8)
def calibration_of(run_id: str) -> Calibration | None:
    """The drift bounds calibrated with the champion's training run (None: trained before calibration)."""
    raw = registry.drift_calibration(run_id)
    return Calibration.from_dict(raw) if raw else None


def importance_of(champ: Champion) -> dict[str, float]:
    """The champion's feature importance (model metadata), for a champion without calibrated bounds."""
    try:
        return registry.model_metadata(champ.name, champ.version).get("feature_importance") or {}
    except (MlflowException, OSError) as exc:
        log.warning("no feature importance for v%s (%s): features weigh alike", champ.version, exc)
        return {}


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
    f = outcome.freshness
    if f is not None:
        if f.new_labels is not None:
            metrics.labels_since_training.labels(name).set(f.new_labels)
        if f.data_age_seconds is not None:
            metrics.champion_data_age.labels(name).set(f.data_age_seconds)
        if f.source_hash is not None:
            metrics.source_changed.labels(name).set(int(f.source_hash != f.champion_source_hash))
    r = outcome.result
    if r is None:
        return
    metrics.drift_share.labels(name).set(r.drift_share)
    metrics.drifted_features.labels(name).set(r.drifted_count)
    metrics.weighted_drift_share.labels(name).set(r.weighted_share)
    metrics.drift_level.labels(name).set(LEVELS.index(r.level))
    metrics.feature_drift.clear()
    for f in r.features:
        if not np.isnan(f.score):
            metrics.feature_drift.labels(name, f.feature, f.method, f"{f.threshold:.4g}").set(f.score)
        metrics.feature_drifted.labels(name, f.feature).set(int(f.drifted))
    metrics.prediction_drift.clear()
    if not np.isnan(r.prediction_score):
        metrics.prediction_drift.labels(name, r.prediction_method, f"{r.prediction_threshold:.4g}").set(
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


def _fire(
    settings: MonitorSettings,
    trigger: RetrainTrigger | None,
    champ: Champion,
    run_id: int,
    reasons: list[str],
    kinds: list[str],
    figures: dict[str, Any],
    outcome: CheckOutcome,
    waiting: str | None = None,
) -> None:
    """One retrain trigger for everything this check found (cooldown and dedupe apply); with `waiting`
    (an alarm without the labels to learn from, see `waiting_for_labels`) a `waiting_labels` row and no
    retrain: a later check fires once the labels are in."""
    trigger = trigger or RetrainTrigger(settings)
    if waiting:
        outcome.trigger = trigger.note(
            "; ".join(reasons) + f" -- {waiting}", source="monitor", status=WAITING
        )
        metrics.triggers.labels(settings.model_name, outcome.trigger.backend, WAITING, "monitor").inc()
        return
    # the dedupe key names what crossed (not its figures), so the same drift or the same new data seen
    # on every run within the dedupe window fires once
    key = f"monitor:{settings.model_name}:v{champ.version}:" + ",".join(kinds)
    outcome.trigger = trigger.fire(
        "; ".join(reasons),
        source="monitor",
        dedupe_key=key,
        monitoring_run_id=run_id,
        figures={**figures, "trigger_kinds": trigger_kinds(kinds)},
    )
    metrics.triggers.labels(
        settings.model_name, outcome.trigger.backend, outcome.trigger.status, "monitor"
    ).inc()


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
        fresh = check_freshness(settings, config, champ, engine, now)
        outcome.freshness = fresh
        values["details"] = {"freshness": _clean(fresh.as_dict())}
        if len(window) < settings.min_window:
            outcome.status = "skipped"
            outcome.reason = (
                f"window too small: {len(window)} predictions by v{champ.version} in {span}, "
                f"minimum {settings.min_window} (MONITOR_MIN_WINDOW); no drift judged"
            )
            if fresh.reasons:
                outcome.reason += " -- " + "; ".join(fresh.reasons)
                _fire(settings, trigger, champ, run_id, fresh.reasons, fresh.kinds, fresh.figures(), outcome)
                values["trigger_event_id"] = outcome.trigger.id
            return outcome
        reference = reference_of(champ.run_id, champ.reference)
        calibration = calibration_of(champ.run_id)
        result = compute_drift(
            reference,
            window,
            config,
            settings.drift,
            settings.quality,
            champ.threshold,
            calibration=calibration,
            importance=None if calibration else importance_of(champ),
            summary_table=summary_table,
        )
        outcome.result = result
        outcome.status = "drift" if result.alarm else "ok"
        outcome.reason = (
            ("; ".join(result.reasons) if result.alarm else "no threshold crossed")
            + " -- "
            + result.summary()
            + ("" if not fresh.reasons else " -- " + "; ".join(fresh.reasons))
        )
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp) / "report.html"
            result.report.save_html(str(html))
            name = f"{settings.model_name}-run{run_id:06d}-{started:%Y%m%dT%H%M%SZ}.html"
            page = reports.with_section(html.read_bytes(), result.policy_html())
            outcome.report_uri = reports.save(settings, name, page)
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
            details=_clean({**result.details(), "freshness": fresh.as_dict()}),
            report_uri=outcome.report_uri,
        )
        reasons = (result.reasons if result.alarm else []) + fresh.reasons
        if reasons:
            # drift and new data seen by the same check: one trigger naming both
            kinds = (sorted(result.kinds) if result.alarm else []) + fresh.kinds
            figures = {**_figures(result), **fresh.figures()}
            waiting = waiting_for_labels(config, window, kinds)
            _fire(settings, trigger, champ, run_id, reasons, kinds, figures, outcome, waiting)
            values["trigger_event_id"] = outcome.trigger.id
        return outcome
    except Exception as exc:
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


def scheduled_retrain(
    settings: MonitorSettings,
    config: DatasetConfig | None = None,
    *,
    trigger: RetrainTrigger | None = None,
    now=None,
) -> TriggerEvent | None:
    """The scheduled retrain: fire (reason `schedule`) only when there is new data since the champion was
    trained -- any labelled record, or a changed source (`retrain.on_source_change`) -- and otherwise
    record `nothing_new`. None when there is no champion. Cooldown and dedupe apply as to any trigger."""
    config = config or load_config(settings.dataset_config)
    engine = store.engine_for(settings.database_url)
    trigger = trigger or RetrainTrigger(settings)
    registry.connect(settings.tracking_uri)
    champ = champion(settings)
    if champ is None:
        log.info("scheduled retrain: model '%s' has no champion yet", settings.model_name)
        return None
    fresh = check_freshness(settings, config, champ, engine, now, label_bound=1)
    if not fresh.reasons:
        labels = "unknown" if fresh.new_labels is None else str(fresh.new_labels)
        return trigger.note(
            f"schedule: nothing new since v{champ.version} was trained ({labels} labelled records, "
            f"source {'unchanged' if fresh.source_hash else 'not checked'})",
            source="schedule",
        )
    event = trigger.fire(
        "schedule: " + "; ".join(fresh.reasons),
        source="schedule",
        dedupe_key=f"schedule:{settings.model_name}:v{champ.version}:" + ",".join(fresh.kinds),
        figures={**fresh.figures(), "trigger_kinds": ["schedule", "new data"]},
    )
    metrics.triggers.labels(settings.model_name, event.backend, event.status, "schedule").inc()
    return event


def schedule_due(settings: MonitorSettings, now=None) -> bool:
    """Is a scheduled retrain due? RETRAIN_SCHEDULE_SECONDS since the last one (kept in trigger_events,
    so a restarted loop keeps its rhythm); never when the schedule is off."""
    if settings.schedule_seconds <= 0:
        return False
    now = store.as_utc(now) if now is not None else store.utcnow()
    t = store.trigger_events
    with store.engine_for(settings.database_url).connect() as conn:
        last = conn.execute(sa.select(sa.func.max(t.c.created_at)).where(t.c.source == "schedule")).scalar()
    return last is None or (now - store.as_utc(last)).total_seconds() >= settings.schedule_seconds


# --------------------------------------------------------------------------- loop + HTTP


def handle_alerts(
    payload: dict[str, Any],
    trigger: RetrainTrigger,
    model_name: str,
    waiting: Callable[[], str | None] | None = None,
) -> list[TriggerEvent]:
    """Alertmanager webhook (version 4): one trigger call per firing alert; resolved alerts are ignored.
    `waiting()` says why no retrain can start yet (too few labels: `waiting_for_labels`); the alert is
    then recorded as `waiting_labels` and the monitor's own check starts the retrain once labels are in."""
    events = []
    why_wait = waiting() if waiting is not None and payload.get("alerts") else None
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
        if why_wait:
            event = trigger.note(f"{reason} -- {why_wait}", source="alertmanager", status=WAITING)
        else:
            event = trigger.fire(reason, source="alertmanager", dedupe_key=key)
        metrics.triggers.labels(model_name, event.backend, event.status, "alertmanager").inc()
        events.append(event)
    return events


def alert_waiting(settings: MonitorSettings, config: DatasetConfig) -> Callable[[], str | None]:
    """`waiting_for_labels` for an alert, on the window the monitor checks, looked up when the alert
    arrives (None when the lookup fails: the alert then fires as it would without the rule; logged)."""

    def why() -> str | None:
        try:
            registry.connect(settings.tracking_uri)
            champ = champion(settings)
            if champ is None:
                return None
            engine = store.engine_for(settings.database_url)
            window = read_window(
                engine, settings.model_name, champ.version, settings.window_size, settings.window_minutes
            )
            return waiting_for_labels(config, window, [])
        except Exception as exc:  # noqa: BLE001 - an alert is never dropped because of a lookup
            log.warning("alert: cannot count the labels of the checked window: %s", exc)
            return None

    return why


def make_server(
    settings: MonitorSettings,
    trigger: RetrainTrigger,
    host: str | None = None,
    config: DatasetConfig | None = None,
) -> ThreadingHTTPServer:
    waiting = alert_waiting(settings, config) if config is not None else None

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                self._send(200, b'{"status": "ok"}')
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
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
            events = handle_alerts(payload, trigger, settings.model_name, waiting)
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
    server = make_server(settings, trigger, config=config)
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
    guard_thread = None
    if settings.guard_enabled:  # the post-promotion guard, on its own (shorter) period
        guard_thread = threading.Thread(
            target=guard.run_forever, args=(settings, config, stop), name="monitor-guard", daemon=True
        )
        guard_thread.start()
    done = 0
    try:
        while not stop.is_set():
            outcome = run_once(settings, config, trigger=trigger)
            print(outcome.line(), flush=True)
            if schedule_due(settings):
                try:
                    event = scheduled_retrain(settings, config, trigger=trigger)
                    if event is not None:
                        print(f"scheduled retrain: {event.status} {event.detail}", flush=True)
                except Exception:
                    log.exception("scheduled retrain failed")
            done += 1
            if iterations is not None and done >= iterations:
                break
            stop.wait(settings.interval_seconds)
    finally:
        stop.set()  # the guard's thread too: wait for a check in progress to finish
        if guard_thread is not None:
            guard_thread.join(timeout=60)
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
    sub.add_parser(
        "scheduled",
        help="the scheduled retrain: fire only when there is new data since the champion was trained",
    )
    args = parser.parse_args(argv)
    settings = load_or_exit(MonitorSettings)
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "loop":
        return loop(settings, args.iterations)
    if args.command == "scheduled":
        event = scheduled_retrain(settings)
        if event is None:
            print("scheduled retrain: no champion yet", flush=True)
            return 0
        print(f"scheduled retrain: event {event.id} {event.status} ({event.backend}) {event.detail}")
        return 1 if event.status == "failed" else 0
    outcome = run_once(settings, summary_table=not args.fast)
    print(outcome.line(), flush=True)
    if outcome.status == "error":
        return 1
    return 3 if args.fail_on_drift and outcome.status == "drift" else 0


if __name__ == "__main__":
    sys.exit(main())
