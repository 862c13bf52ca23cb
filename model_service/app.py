"""The Flask application factory, served by `python -m model_service.server` (granian, WSGI).

Endpoints (OpenAPI 3 at /openapi.json, Swagger UI at /docs, served from the installed
swagger-ui-bundle package, no CDN):

| method | path               | auth            | what                                                     |
|--------|--------------------|-----------------|----------------------------------------------------------|
| POST   | /v1/predict        | X-API-Key       | probability and label for 1..MAX_BATCH_SIZE records      |
| POST   | /v1/explain        | X-API-Key       | per-feature contributions (log-odds) to those scores     |
| GET    | /v1/model          | X-API-Key       | the version served: metrics, schema, importance, commit  |
| POST   | /v1/feedback       | X-API-Key       | the true label of a (request id, record index)           |
| POST   | /v1/admin/reload   | Bearer token    | check the alias now and load it (admin)                  |
| GET    | /health            | open            | the process answers                                      |
| GET    | /ready             | open            | a model is loaded (and what registry / database say)     |
| GET    | /metrics           | open            | Prometheus metrics of every worker                       |

Layout (the Flask tutorial's): this factory wires the pieces; the views live in blueprints under
`model_service.api` (one module per group of endpoints), authentication in `model_service.auth`, the
app-wide state (settings, model manager, prediction log, feedback store) in `model_service.state`,
reached by the views through `current_app.extensions["model_service"]`.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path
from types import FunctionType

import swagger_ui_bundle
from flask import Flask, Response, g, send_from_directory

from core.logs import setup_logging
from core.objects import ObjectStore, S3Access
from model_service import api
from model_service import metrics as m
from model_service.api.ops import init_metrics
from model_service.api.schemas import FeedbackRequest
from model_service.api.spec import ServiceApi
from model_service.bodies import BodyReader
from model_service.feedback import FeedbackStore
from model_service.hardening import ServiceRequest, security_headers
from model_service.prediction_log.request_ids import new_request_id
from model_service.prediction_log.writer import PredictionLog
from model_service.request_schema import predict_request_schema
from model_service.served_model import ModelManager
from model_service.settings import ServiceSettings, SettingsError
from model_service.shadow import ShadowScorer
from model_service.state import EXTENSION, ServiceState, shutdown_all, track

__all__ = ["check_settings_or_exit", "create_app", "shutdown_all"]

SWAGGER_STATIC = "/docs/static/"

atexit.register(shutdown_all)


def _openapi_config(settings: ServiceSettings) -> dict:
    return {
        "API_TITLE": f"{settings.model_name} model service",  # the served model's data set joins it once loaded
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "/docs",
        "OPENAPI_SWAGGER_UI_URL": SWAGGER_STATIC,
        "OPENAPI_SWAGGER_UI_CONFIG": {"persistAuthorization": True, "displayRequestDuration": True},
        "API_SPEC_OPTIONS": {
            "info": {
                "description": (
                    f"Serves the `{settings.model_alias}` version of the registered model `{settings.model_name}`. "
                    "Request and response schemas are derived from the model's feature schema. Predict, model "
                    "and feedback need an `X-API-Key` header; admin endpoints a bearer token; health, ready and "
                    "metrics are open."
                )
            },
            "components": {
                "securitySchemes": {
                    "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "AdminToken": {"type": "http", "scheme": "bearer"},
                }
            },
        },
    }


def _service_state(settings: ServiceSettings) -> ServiceState:
    trigger = (
        Path(settings.prometheus_multiproc_dir) / "reload-request"
        if settings.prometheus_multiproc_dir
        else None
    )
    plog = PredictionLog(
        settings.database_url,
        settings.spool_dir,
        segment_seconds=settings.log_segment_seconds,
        metrics=m.LogMetrics(),
        fsync=settings.log_sync == "fsync",
        sync_seconds=settings.log_sync_seconds,
        min_free_bytes=settings.log_min_free_bytes,
        max_backlog_bytes=settings.spool_max_bytes,
        max_backlog_seconds=settings.spool_max_age_seconds,
    )
    return ServiceState(
        settings,
        ModelManager(settings, trigger_file=trigger),
        plog,
        FeedbackStore(
            plog, ObjectStore(settings.log_archive_uri, S3Access.of(settings)), settings.log_retention_days
        ),
        ShadowScorer(settings),
        BodyReader(settings.max_request_bytes, settings.body_reader_threads),
    )


class ServiceFlask(Flask):
    """Flask, with `ensure_sync` (called for the view, each of its decorators' wrappers and each request
    hook: about 16 times a predict request, each an `inspect.iscoroutinefunction`) remembering its
    answer per plain function. Views and hooks are module-level functions, so the cache is bounded;
    anything else (bound methods) is checked every time as Flask does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync: dict[FunctionType, object] = {}

    def ensure_sync(self, func):
        if type(func) is not FunctionType:
            return super().ensure_sync(func)
        found = self._sync.get(func)
        if found is None:
            found = self._sync.setdefault(func, super().ensure_sync(func))
        return found


def _request_id() -> None:
    g.request_id = new_request_id()


def _request_id_header(resp: Response) -> Response:
    rid = getattr(g, "request_id", None)
    if rid:
        resp.headers["X-Request-ID"] = rid
    return resp


def create_app(settings: ServiceSettings | None = None, *, start_background: bool = True) -> Flask:
    """Build the app: settings checked, champion loaded (or polled for), the spool's background thread
    started (the database writer is a process of its own: model_service/server.py starts it).

    `start_background=False` (tests): neither the spool's thread nor the reload thread runs; records stay
    in the spool until the test moves them (`plog.flush()`)."""
    settings = (settings or ServiceSettings.from_env()).check()
    setup_logging(settings.log_level, settings.log_format)

    app = ServiceFlask("model_service")
    app.request_class = ServiceRequest  # unknown methods labelled "other" in the request metrics
    app.config.update(_openapi_config(settings), MAX_CONTENT_LENGTH=settings.max_request_bytes)
    openapi = ServiceApi(app, doc_values={"max_batch_size": settings.max_batch_size})
    openapi.spec.components.schema(
        "PredictRequest", schema=predict_request_schema([], settings.max_batch_size)
    )
    openapi.spec.components.schema("FeedbackRequest", schema=FeedbackRequest)

    static_root = Path(swagger_ui_bundle.swagger_ui_path)

    @app.route(SWAGGER_STATIC + "<path:filename>")
    def swagger_static(filename: str):
        return send_from_directory(static_root, filename, max_age=3600)

    state = _service_state(settings)
    app.extensions[EXTENSION] = state
    api.register(openapi)
    openapi.patch_record_ref()
    app.before_request(_request_id)
    app.after_request(_request_id_header)
    app.after_request(security_headers)
    init_metrics(app, multiprocess=m.multiprocess())

    m.MODEL_LOADED.set(0)  # the log's database gauge is the writer process's
    state.manager.check()
    if start_background:
        state.plog.start()
        state.manager.start()
        state.shadow.start(state.manager)
    else:  # tests drive the writer by hand
        state.plog.spool_dir.mkdir(parents=True, exist_ok=True)
        state.plog.ensure_tables()
    track(state)
    return app


def check_settings_or_exit() -> ServiceSettings:
    """For command-line entry points: a one-line error and exit code 2 on a bad environment."""
    try:
        return ServiceSettings.from_env().check()
    except SettingsError as exc:
        print(f"model_service: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
