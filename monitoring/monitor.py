"""The monitor's loop and command line: `python -m monitoring.monitor run` (one check, `make monitor`),
`... scheduled` (the scheduled retrain, `make retrain-scheduled`) or `... loop`.

`run` is one check (monitoring.check): drift and live quality of the champion's recent predictions, new
data since it was trained; a `monitoring_runs` row, an HTML report, the retrain trigger when a bound is
crossed.

`loop` runs a check every MONITOR_INTERVAL_SECONDS and serves, on MONITOR_METRICS_PORT
(monitoring.webhook): `GET /metrics` (Prometheus), `GET /healthz`, and `POST /alerts`, an Alertmanager
webhook receiver that calls the same retrain trigger for each firing alert (dedupe key: the alert's
name and labels).

`loop` also runs the post-promotion guard (monitoring.guard) every GUARD_INTERVAL_SECONDS
(GUARD_ENABLED): after a promotion it compares the new champion with the previous one and rolls back
on a breach.

`loop` also runs the prediction log's retention (core.retention) when LOG_RETENTION_DAYS > 0: at start,
then just after every UTC midnight, in its own thread (a long first run delays no check): the days past
the window are archived to LOG_ARCHIVE_URI as Parquet, then deleted from the database in short batches.

`scheduled` (`loop` every RETRAIN_SCHEDULE_SECONDS; monitoring.schedule) retrains only when there is new
data since the champion was trained, and records `nothing_new` otherwise.

Exit codes of `run`: 0 when the check ran (ok, drift or skipped), 1 on error, 3 with --fail-on-drift
when the check alarmed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta

from core import retention
from core.dataset import load_config
from core.logs import setup_logging
from core.settings import load_or_exit
from monitoring import guard
from monitoring.check import run_check
from monitoring.schedule import schedule_due, scheduled_retrain
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger
from monitoring.webhook import make_server

log = logging.getLogger("monitoring.monitor")


def seconds_to_next_day(now: datetime, offset: float = 60.0) -> float:
    """Seconds from `now` to `offset` seconds past the next UTC midnight."""
    now = now.astimezone(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return (midnight - now).total_seconds() + offset


def retention_forever(settings: MonitorSettings, stop: threading.Event) -> None:
    """The retention job at once, then once a day just after UTC midnight, until `stop`."""
    while not stop.is_set():
        try:
            result = retention.run_from_settings(settings)
            if result is not None:
                print(result.line(), flush=True)
        except Exception:
            log.exception("retention failed (the next run archives what this one left)")
        stop.wait(seconds_to_next_day(datetime.now(UTC)))


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
    retention_thread = None
    if settings.log_retention_days > 0:
        retention_thread = threading.Thread(
            target=retention_forever, args=(settings, stop), name="monitor-retention", daemon=True
        )
        retention_thread.start()
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
        for worker in (guard_thread, retention_thread):
            if worker is not None:
                worker.join(timeout=60)  # a retention run cut short is finished by the next one
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
