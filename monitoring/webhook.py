"""The monitor's HTTP endpoints: the Alertmanager webhook, /metrics and /healthz, as a Flask app
(`create_app`) that `monitor loop` serves on MONITOR_HOST:MONITOR_METRICS_PORT (`make_server`).

| method | path     | auth                                        | what                                          |
|--------|----------|---------------------------------------------|-----------------------------------------------|
| POST   | /alerts  | `Authorization: Bearer MONITOR_WEBHOOK_TOKEN` | Alertmanager webhook (version 4): one retrain trigger per firing alert |
| GET    | /metrics | open                                        | Prometheus metrics of the monitor             |
| GET    | /healthz | open                                        | the process answers                           |

`POST /alerts` answers 503 while MONITOR_WEBHOOK_TOKEN is unset (the webhook is closed), 401 for a
bad or missing token (compared in constant time), then 411 without a Content-Length (a chunked
body), 400 for a bad
Content-Length, a body that is not JSON or a payload that is not a webhook payload (the message names
the field), 413 for a body over MONITOR_WEBHOOK_MAX_BYTES. Unknown paths are 404, other methods 405;
every error is `{"error": "..."}`.

The server is werkzeug's threaded one (a thread per connection), each connection with a socket timeout
of MONITOR_HTTP_TIMEOUT_SECONDS: a client that sends nothing, or stops half-way, is disconnected and
its thread ends.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, abort, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug import serving
from werkzeug.exceptions import HTTPException

from core import registry, store
from core.dataset import DatasetConfig
from monitoring import check, metrics
from monitoring.cohorts import JUDGED
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger, TriggerEvent

log = logging.getLogger("monitoring.webhook")
http_log = logging.getLogger("monitoring.webhook.http")

JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


class PayloadError(ValueError):
    """The body is JSON but not an Alertmanager webhook payload; the message names the field."""


def _json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), "a number")


def _strings(where: str, value: Any) -> None:
    """`value`, when given, must be an object of strings (Alertmanager's labels and annotations)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise PayloadError(f"`{where}` must be an object, not {_json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"`{where}.{key}` must be a string, not {_json_type(item)}")


def alerts_of(payload: Any) -> list[dict[str, Any]]:
    """The alerts of a webhook payload, checked before any is acted on (PayloadError otherwise)."""
    if not isinstance(payload, dict):
        raise PayloadError(
            f"the body must be an object (Alertmanager's webhook payload), not {_json_type(payload)}"
        )
    if not isinstance(payload.get("status", ""), str):
        raise PayloadError(f"`status` must be a string, not {_json_type(payload['status'])}")
    alerts = payload.get("alerts")
    if alerts is None:
        return []
    if not isinstance(alerts, list):
        raise PayloadError(f"`alerts` must be an array, not {_json_type(alerts)}")
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise PayloadError(f"`alerts[{i}]` must be an object, not {_json_type(alert)}")
        if not isinstance(alert.get("status", ""), str):
            raise PayloadError(f"`alerts[{i}].status` must be a string, not {_json_type(alert['status'])}")
        _strings(f"alerts[{i}].labels", alert.get("labels"))
        _strings(f"alerts[{i}].annotations", alert.get("annotations"))
    return alerts


def handle_alerts(
    payload: Any,
    trigger: RetrainTrigger,
    model_name: str,
    waiting: Callable[[], LabelWait | str | None] | None = None,
) -> list[TriggerEvent]:
    """Alertmanager webhook (version 4): one trigger call per firing alert; resolved alerts are ignored.
    `waiting()` says why no retrain can start yet (too few labels: `check.waiting_for_labels`); the
    alert is then recorded as `waiting_labels` and the monitor's own check starts the retrain once
    labels are in. A payload of another shape raises PayloadError before any alert is acted on."""
    alerts = alerts_of(payload)
    events = []
    wait = waiting() if waiting is not None and alerts else None
    why_wait, cohort_run = (wait.reason, wait.run_id) if isinstance(wait, LabelWait) else (wait, None)
    for alert in alerts:
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
            # with the checked window's run: the monitor's checks count that cohort's labels and fire
            # this alert's retrain once they are in (check.pending_cohort), as for their own alarms
            cohort = {"reasons": [reason], "kinds": [f"alert:{name}"]} if cohort_run is not None else None
            event = trigger.note(
                f"{reason} -- {why_wait}",
                source="alertmanager",
                status=check.WAITING,
                monitoring_run_id=cohort_run,
                parameters=cohort,
            )
        else:
            event = trigger.fire(reason, source="alertmanager", dedupe_key=key)
        metrics.triggers.labels(model_name, event.backend, event.status, "alertmanager").inc()
        events.append(event)
    return events


@dataclass(frozen=True)
class LabelWait:
    """Why an alert's retrain waits for labels, and the monitoring run whose window is its cohort (the
    champion's newest judged window; None: none judged yet, the alert then waits on the checked window's
    labels as they come)."""

    reason: str
    run_id: int | None = None


def newest_judged_run(engine: sa.Engine, model_name: str, version: str) -> int | None:
    r = store.monitoring_runs
    query = (
        sa.select(r.c.id)
        .where(r.c.model_name == model_name, r.c.model_version == str(version), r.c.status.in_(JUDGED))
        .order_by(r.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def alert_waiting(settings: MonitorSettings, config: DatasetConfig) -> Callable[[], LabelWait | None]:
    """`waiting_for_labels` for an alert, on the window the monitor checks, looked up when the alert
    arrives, with the champion's newest judged run as the alert's cohort (None when nothing waits or the
    lookup fails: the alert then fires as it would without the rule; logged)."""

    def why() -> LabelWait | None:
        try:
            registry.connect(settings.tracking_uri)
            champ = check.champion(settings)
            if champ is None:
                return None
            engine = store.engine_for(settings.database_url)
            window = check.read_window(
                engine, settings.model_name, champ.version, settings.window_size, settings.window_minutes
            )
            reason = check.waiting_for_labels(config, window, [])
            if reason is None:
                return None
            return LabelWait(reason, newest_judged_run(engine, settings.model_name, champ.version))
        except Exception as exc:  # noqa: BLE001 - an alert is never dropped because of a lookup
            log.warning("alert: cannot count the labels of the checked window: %s", exc)
            return None

    return why


def _error(code: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), code


def _body() -> Any:
    """The request's JSON body (an empty body: `{}`); 411, 400 or 413 when it cannot be read. The body
    needs a Content-Length (Alertmanager sends one): werkzeug would cut a chunked body over
    MAX_CONTENT_LENGTH short instead of refusing it."""
    length = request.headers.get("Content-Length")
    if length is None or "Transfer-Encoding" in request.headers:
        abort(411, "a Content-Length header is required (and no Transfer-Encoding)")
    if not (length.isascii() and length.isdigit()):
        abort(400, f"bad Content-Length: {length[:40]!r}")
    raw = request.get_data(cache=False)  # 413 when Content-Length is over MAX_CONTENT_LENGTH
    try:
        return json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        abort(400, "body is not JSON")


def create_app(
    settings: MonitorSettings,
    trigger: RetrainTrigger,
    waiting: Callable[[], LabelWait | str | None] | None = None,
) -> Flask:
    """The app: POST /alerts calls `trigger` for each firing alert (`waiting`: see handle_alerts)."""
    app = Flask("monitoring.webhook")
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_bytes
    expected = f"Bearer {settings.webhook_token}".encode()

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/alerts")
    def alerts():
        if not settings.webhook_token:
            log.warning("POST /alerts refused: MONITOR_WEBHOOK_TOKEN is not set (the webhook is closed)")
            return _error(503, "webhook disabled: MONITOR_WEBHOOK_TOKEN is not set")
        sent = request.headers.get("Authorization") or ""
        if not hmac.compare_digest(sent.encode(), expected):
            log.warning("POST /alerts refused: bad or missing bearer token")
            return _error(401, "bad or missing bearer token")
        try:
            events = handle_alerts(_body(), trigger, settings.model_name, waiting)
        except PayloadError as exc:
            return _error(400, str(exc))
        return {
            "events": [
                {"id": e.id, "status": e.status, "backend": e.backend, "detail": e.detail} for e in events
            ]
        }

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return _error(413, f"body over {settings.webhook_max_bytes} bytes (MONITOR_WEBHOOK_MAX_BYTES)")
        if exc.code in (404, 405):
            return _error(exc.code, "not found" if exc.code == 404 else "method not allowed")
        return _error(exc.code or 500, exc.description or exc.name)

    return app


class _Handler(serving.WSGIRequestHandler):
    """werkzeug's request handler with a socket timeout (`timeout`, set per server) and its access log
    at debug level (Prometheus scrapes every few seconds)."""

    def log(self, kind: str, message: str, *args: Any) -> None:
        http_log.log(logging.INFO if kind == "error" else logging.DEBUG, message, *args)


def make_server(
    settings: MonitorSettings,
    trigger: RetrainTrigger,
    host: str | None = None,
    config: DatasetConfig | None = None,
) -> serving.BaseWSGIServer:
    """The app on werkzeug's threaded server at `host` (default MONITOR_HOST):MONITOR_METRICS_PORT, not
    yet serving (`serve_forever` in a thread; `shutdown` and `server_close` to stop). With `config`,
    firing alerts wait for labels as the monitor's check does (`alert_waiting`)."""
    waiting = alert_waiting(settings, config) if config is not None else None
    handler = type("Handler", (_Handler,), {"timeout": settings.http_timeout})
    return serving.make_server(
        host or settings.metrics_host,
        settings.metrics_port,
        create_app(settings, trigger, waiting),
        threaded=True,
        request_handler=handler,
    )
