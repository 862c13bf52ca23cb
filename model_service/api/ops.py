"""The `ops` blueprint (open): GET /health, GET /ready; and the Prometheus metrics of /metrics."""

from __future__ import annotations

import json
import os

from flask import Flask, Response
from flask_smorest import Blueprint

from model_service import metrics as m
from model_service.api.schemas import HealthResponse, ReadyQuery, ReadyResponse
from model_service.api.spec import errors
from model_service.hardening import endpoint
from model_service.state import services

blp = Blueprint("ops", "model_service.api", url_prefix="", description="Liveness, readiness, metrics")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@blp.route("/health", methods=["GET"])
@blp.doc(summary="Liveness: the process answers (open)")
@blp.alt_response(200, schema=HealthResponse, success=True, description="alive")
def health():
    return Response(json.dumps({"status": "ok", "pid": os.getpid()}), mimetype="application/json")


@blp.route("/ready", methods=["GET"])
@blp.doc(summary="Readiness: a model is loaded and the prediction log can be written (open)")
@blp.arguments(ReadyQuery, location="query")
@blp.alt_response(200, schema=ReadyResponse, success=True, description="ready (status ok or degraded)")
@blp.alt_response(503, schema=ReadyResponse, description="not ready")
@errors(blp, 422)
def ready(query):
    st = services()
    model = st.manager.current
    db_ok = st.db_reachable()
    registry = {True: "ok", False: "unreachable", None: "unknown"}[st.manager.registry_ok]
    degraded = (not db_ok) or st.manager.registry_ok is False or st.manager.last_error is not None
    unwritable = st.plog.unwritable()  # a full disk: predictions would be answered 503
    is_ready = model is not None and unwritable is None and not (query["strict"] and degraded)
    body = {
        "ready": is_ready,
        "status": (
            "not_ready" if model is None or unwritable is not None else ("degraded" if degraded else "ok")
        ),
        "model_name": st.settings.model_name,
        "model_version": model.version if model else None,
        "predictor": model.predictor.kind if model else None,
        "registry": registry,
        "database": "ok" if db_ok else "unreachable",
        "reload_error": st.manager.public_error,  # classified: no exception text on an open endpoint
        "reload_error_at": st.manager.last_error_at,
        "last_check_at": st.manager.last_check_at,
        "log": unwritable[0] if unwritable else "ok",
        "log_error": unwritable[1] if unwritable else None,
        "log_queue": st.plog.queued(),  # records in this worker's segment, not yet handed to the writer
        "spool_files": len(st.plog.spooled_files()),
    }
    return Response(json.dumps(body), status=200 if is_ready else 503, mimetype="application/json")


def init_metrics(app: Flask, multiprocess: bool) -> None:
    """GET /metrics and the request metrics (by endpoint: `unmatched` when no route matches; unknown
    methods labelled `other`, see model_service.hardening), from prometheus-flask-exporter: its
    multiprocess exporter when PROMETHEUS_MULTIPROC_DIR is set (model_service/server.py exports it), else this
    process's registry."""
    if multiprocess:
        from prometheus_flask_exporter.multiprocess import MultiprocessInternalPrometheusMetrics

        exporter = MultiprocessInternalPrometheusMetrics(app, group_by=endpoint, buckets=BUCKETS)
    else:
        from prometheus_flask_exporter import PrometheusMetrics

        exporter = PrometheusMetrics(app, group_by=endpoint, buckets=BUCKETS, registry=m.registry())
    app.extensions["prometheus_exporter"] = exporter
