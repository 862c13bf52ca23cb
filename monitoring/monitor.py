"""The monitor's loop and command line: `python -m monitoring.monitor run` (one check, `make monitor`),
`... scheduled` (the scheduled retrain, `make retrain-scheduled`) or `... loop`.

`run` is one check (monitoring.check): drift and live quality of the champion's recent predictions, new
data since it was trained; a `monitoring_runs` row, an HTML report, the retrain trigger when a bound is
crossed.

`loop` runs a check every MONITOR_INTERVAL_SECONDS and serves, on MONITOR_METRICS_PORT:
`GET /metrics` (Prometheus), `GET /healthz`, and `POST /alerts`, an Alertmanager
webhook receiver that calls the same retrain trigger for each firing alert (dedupe key: the alert's
name and labels).

`loop` also runs the post-promotion guard (monitoring.guard) every GUARD_INTERVAL_SECONDS
(GUARD_ENABLED): after a promotion it compares the new champion with the previous one and rolls back
on a breach.

`scheduled` (`loop` every RETRAIN_SCHEDULE_SECONDS; monitoring.schedule) retrains only when there is new
data since the champion was trained, and records `nothing_new` otherwise.

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
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import registry, store
from core.dataset import DatasetConfig, load_config
from core.logs import setup_logging
from core.settings import load_or_exit
from monitoring import check, guard, metrics
from monitoring.check import run_check
from monitoring.schedule import schedule_due, scheduled_retrain
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger, TriggerEvent

log = logging.getLogger("monitoring.monitor")

# the check's former name here, still used by scripts/demo.py and tests/model
run_once = run_check


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
            event = trigger.note(f"{reason} -- {why_wait}", source="alertmanager", status=check.WAITING)
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
            champ = check.champion(settings)
            if champ is None:
                return None
            engine = store.engine_for(settings.database_url)
            window = check.read_window(
                engine, settings.model_name, champ.version, settings.window_size, settings.window_minutes
            )
            return check.waiting_for_labels(config, window, [])
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
            outcome = run_check(settings, config, trigger=trigger)
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
    outcome = run_check(settings, summary_table=not args.fast)
    print(outcome.line(), flush=True)
    if outcome.status == "error":
        return 1
    return 3 if args.fail_on_drift and outcome.status == "drift" else 0


if __name__ == "__main__":
    sys.exit(main())
