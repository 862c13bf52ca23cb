"""The Flask application factory: `gunicorn -c model_service/gunicorn_conf.py "model_service.app:create_app()"`.

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
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from functools import wraps
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, request, send_from_directory
from flask_smorest import Api, Blueprint, abort
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from werkzeug.exceptions import RequestEntityTooLarge

from core.store import feedback, predictions
from model_service import jsonfast
from model_service import metrics as m
from model_service.explain import UNITS, records_payload
from model_service.model import LoadedModel, ModelManager
from model_service.prediction_log import PredictionLog, new_request_id, now, request_id_age
from model_service.schema import (
    MAX_ERRORS,
    PredictResponse,
    RecordErrors,
    Validated,
    predict_request_schema,
)
from model_service.settings import ServiceSettings, SettingsError

log = logging.getLogger("model_service")
_STATES: list[ServiceState] = []
_STATES_LOCK = threading.Lock()
SWAGGER_STATIC = "/docs/static/"


# --------------------------------------------------------------------------- state and shutdown
class ServiceState:
    """Everything one app instance owns; `shutdown` flushes the prediction log (SIGTERM, atexit)."""

    def __init__(self, settings: ServiceSettings, manager: ModelManager, plog: PredictionLog):
        self.settings = settings
        self.manager = manager
        self.plog = plog
        self._closed = False
        self._ping_cache: tuple[float, bool] = (0.0, True)

    def db_reachable(self) -> bool:
        at, ok = self._ping_cache
        if time.monotonic() - at > 2.0:
            ok = self.plog.ping()
            self._ping_cache = (time.monotonic(), ok)
        return ok

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.manager.stop()
        self.plog.close(timeout=max(1.0, self.settings.graceful_timeout - 5))
        log.info("model service worker %d stopped; prediction log flushed", os.getpid())


def shutdown_all() -> None:
    with _STATES_LOCK:
        states = list(_STATES)
    for state in states:
        state.shutdown()


atexit.register(shutdown_all)


def state() -> ServiceState:
    return current_app.extensions["model_service"]


# --------------------------------------------------------------------------- auth
def _matches(given: str, secrets: tuple[str, ...]) -> bool:
    """Constant-time: digests of equal length are compared (no length leak), and every configured
    secret is compared whatever matched before."""
    given_d = hashlib.sha256(given.encode()).digest()
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given_d, hashlib.sha256(secret.encode()).digest())
    return found


def require_api_key(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        settings = state().settings
        if settings.auth_enabled:
            key = request.headers.get("X-API-Key")
            if not key:
                abort(401, message="missing API key: send it in the X-API-Key header")
            if not _matches(key, settings.api_keys):
                abort(403, message="invalid API key")
        return view(*args, **kwargs)

    return wrapper


def require_admin(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        settings = state().settings
        if settings.auth_enabled:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                abort(
                    401,
                    message="missing admin token: send 'Authorization: Bearer <ADMIN_TOKEN>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if settings.admin_token is None:
                abort(403, message="admin endpoints are disabled: ADMIN_TOKEN is not set")
            if not _matches(token.strip(), (settings.admin_token,)):
                abort(403, message="invalid admin token")
        return view(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- schemas (static part)
class FeedbackRequest(Schema):
    class Meta:
        unknown = RAISE

    request_id = fields.UUID(
        required=True, metadata={"description": "the request_id of a /v1/predict answer"}
    )
    record_index = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=1_000_000),
        metadata={"description": "index of the record in that request (default 0)"},
    )
    label = fields.Integer(
        required=True,
        strict=True,
        validate=validate.OneOf([0, 1]),
        metadata={"description": "the true outcome: 1 positive, 0 negative"},
    )


class FeedbackResponse(Schema):
    request_id = fields.String(required=True)
    record_index = fields.Integer(required=True)
    label = fields.Integer(required=True)
    received_at = fields.String(required=True)


class FeatureImportance(Schema):
    feature = fields.String(required=True, metadata={"description": "input feature (one-hot columns summed)"})
    importance = fields.Float(
        required=True,
        metadata={"description": "share of the total (sums to 1): XGBoost gain, or |coefficient| for LR"},
    )


class ModelResponse(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    alias = fields.String(required=True)
    run_id = fields.String(allow_none=True)
    algorithm = fields.String(allow_none=True)
    trained_at = fields.String(allow_none=True)
    threshold = fields.Float(required=True)
    test_metrics = fields.Dict(required=True)
    feature_schema = fields.List(fields.Dict(), required=True)
    git_commit = fields.String(allow_none=True)
    data_hash = fields.String(allow_none=True)
    dataset = fields.String(allow_none=True)
    target = fields.String(allow_none=True)
    predictor = fields.String(required=True, metadata={"description": "numpy (fast path) or pipeline"})
    fast_path_note = fields.String()
    loaded_at = fields.String(required=True)
    feature_importance = fields.List(
        fields.Nested(FeatureImportance),
        required=True,
        metadata={"description": "global importance per input feature (computed in training), largest first"},
    )
    explanation_method = fields.String(
        allow_none=True, metadata={"description": "what /v1/explain uses: tree_shap, linear or null"}
    )
    explanation_note = fields.String()


class Contribution(Schema):
    feature = fields.String(required=True, metadata={"description": "input feature of the request record"})
    value = fields.Raw(
        required=True,
        allow_none=True,
        metadata={"description": "the record's value of that feature, as validated (null if missing)"},
    )
    contribution = fields.Float(
        required=True,
        metadata={
            "description": "additive contribution to the score in log-odds (positive: raises the "
            "probability); a categorical feature's one-hot columns are summed"
        },
    )


class Explanation(Schema):
    index = fields.Integer(required=True, metadata={"description": "position of the record in the request"})
    probability = fields.Float(required=True, metadata={"description": "as /v1/predict answers it"})
    label = fields.Integer(required=True, metadata={"description": "1 when probability >= threshold"})
    base_value = fields.Float(
        required=True,
        metadata={
            "description": "log-odds before any feature: XGBoost's expected margin over the training data "
            "(tree SHAP bias), or the logistic regression's intercept"
        },
    )
    logit = fields.Float(
        required=True,
        metadata={"description": "base_value + sum(contributions) = log(p / (1 - p)), the model's margin"},
    )
    contributions = fields.List(
        fields.Nested(Contribution),
        required=True,
        metadata={"description": "one per input feature, largest absolute contribution first"},
    )
    unknown_categories = fields.List(
        fields.String(), metadata={"description": "features whose category the model did not see"}
    )


class ExplainResponse(Schema):
    request_id = fields.String(required=True, metadata={"description": "also in the X-Request-ID header"})
    model_name = fields.String(required=True)
    model_version = fields.String(required=True)
    threshold = fields.Float(required=True)
    method = fields.String(
        required=True,
        metadata={
            "description": "tree_shap (exact, XGBoost pred_contribs) or linear (coef * x, base = intercept)"
        },
    )
    units = fields.String(required=True, metadata={"description": "always log-odds"})
    explanations = fields.List(fields.Nested(Explanation), required=True)


class ReloadResponse(Schema):
    changed = fields.Boolean(required=True)
    previous_version = fields.String(allow_none=True)
    version = fields.String(allow_none=True, metadata={"description": "the version served after the reload"})
    error = fields.String(allow_none=True)
    predictor = fields.String()


class ReloadQuery(Schema):
    force = fields.Boolean(
        load_default=False,
        metadata={"description": "reload even if the alias still points at the served version"},
    )


class HealthResponse(Schema):
    status = fields.String(required=True)
    pid = fields.Integer(required=True)


class ReadyResponse(Schema):
    ready = fields.Boolean(required=True)
    status = fields.String(required=True, metadata={"description": "ok, degraded or not_ready"})
    model_name = fields.String(required=True)
    model_version = fields.String(allow_none=True)
    predictor = fields.String(allow_none=True)
    registry = fields.String(required=True, metadata={"description": "ok, unreachable or unknown"})
    database = fields.String(required=True, metadata={"description": "ok or unreachable (records spool)"})
    reload_error = fields.String(allow_none=True)
    reload_error_at = fields.String(allow_none=True)
    last_check_at = fields.String(allow_none=True)
    log_queue = fields.Integer(required=True)
    spool_files = fields.Integer(required=True)


class ReadyQuery(Schema):
    strict = fields.Boolean(
        load_default=False,
        metadata={"description": "also answer 503 when the registry or the database is unreachable"},
    )


# --------------------------------------------------------------------------- the Api with a live record schema
class ServiceApi(Api):
    """flask-smorest Api whose /openapi.json shows the record schema of the model being served."""

    def handle_http_exception(self, error):
        payload, code, headers = super().handle_http_exception(error)
        allowed = getattr(error, "valid_methods", None)
        if code == 405 and allowed:  # RFC 9110: a 405 lists the allowed methods
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return payload, code, headers

    def _openapi_json(self):
        spec = self.spec.to_dict()
        st = current_app.extensions.get("model_service")
        model = st.manager.current if st else None
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        if model is not None:
            record = self.ma_plugin.converter.schema2jsonschema(model.record_schema())
            record["description"] = (
                f"one record for {model.name} v{model.version}, derived from the model's feature schema"
            )
            schemas["PredictRecord"] = record
        # /metrics is served by prometheus-flask-exporter (text format), documented here
        spec.setdefault("paths", {})["/metrics"] = {
            "get": {
                "tags": ["ops"],
                "summary": "Prometheus metrics of every worker (open)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        }
        return current_app.response_class(json.dumps(spec, indent=2), mimetype="application/json")


def _json_body(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


ERRORS = {
    400: "malformed JSON",
    401: "missing credentials",
    403: "wrong credentials",
    404: "unknown request id or record",
    409: "this record already has a label",
    413: "body or batch over the limit",
    422: "invalid input: the message and `errors` name the record index and field",
    501: "the served model has no exact explainer (neither XGBoost nor logistic regression)",
    503: "not available now (no model loaded, or the database is down)",
}


def _errors(blp: Blueprint, *codes: int):
    def deco(view):
        for code in codes:
            view = blp.alt_response(code, description=ERRORS[code])(view)
        return view

    return deco


API_KEY = [{"ApiKeyAuth": []}]
ADMIN = [{"AdminToken": []}]


# --------------------------------------------------------------------------- request helpers
def _read_json() -> Any:
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        m.VALIDATION_ERRORS.labels("too_large", "").inc()
        abort(413, message=f"request body over {current_app.config['MAX_CONTENT_LENGTH']} bytes")
    if not raw:
        m.VALIDATION_ERRORS.labels("json", "").inc()
        abort(400, message="empty body: send a JSON object")
    try:
        return jsonfast.loads(raw)
    except (ValueError, RecursionError) as exc:
        m.VALIDATION_ERRORS.labels("json", "").inc()
        abort(400, message=f"malformed JSON: {str(exc)[:200]}")


def _first_error(errors: dict[int, dict[str, list[str]]]) -> str:
    i = min(errors)
    name, msgs = next(iter(errors[i].items()))
    return f"records[{i}].{name}: {msgs[0]}"


def _current_model() -> LoadedModel:
    model = state().manager.current
    if model is None:
        abort(
            503,
            message=f"no model loaded yet: {state().manager.last_error or 'loading'}",
            headers={"Retry-After": "5"},
        )
    return model


def _validated_batch(model: LoadedModel, max_batch_size: int) -> Validated:
    """The request body of /v1/predict and /v1/explain, checked: 400 malformed JSON, 413 over a limit,
    422 naming the record index and field; validation errors counted in the metrics."""
    body = _read_json()
    if type(body) is not dict or "records" not in body:
        m.VALIDATION_ERRORS.labels("shape", "").inc()
        abort(
            422,
            message="body must be a JSON object with a 'records' list",
            errors={"json": {"records": ["Missing data for required field."]}},
        )
    extra = sorted(k for k in body if k != "records")
    records = body["records"]
    if extra or type(records) is not list or not records:
        m.VALIDATION_ERRORS.labels("shape", "").inc()
        errs = {k: ["Unknown field."] for k in extra[:10]}
        if type(records) is not list:
            errs["records"] = ["Not a valid list."]
        elif not records:
            errs["records"] = ["Shorter than minimum length 1."]
        abort(422, message="; ".join(f"{k}: {v[0]}" for k, v in errs.items()), errors={"json": errs})
    if len(records) > max_batch_size:
        m.VALIDATION_ERRORS.labels("too_large", "").inc()
        abort(
            413,
            message=f"{len(records)} records: at most {max_batch_size} per request (MAX_BATCH_SIZE)",
        )
    try:
        batch = model.validator.validate(records)
    except RecordErrors as exc:
        for name in exc.fields()[:MAX_ERRORS]:
            m.VALIDATION_ERRORS.labels("record", name if name in model.validator.name_set else "_other").inc()
        abort(
            422,
            message=f"{exc.count} invalid value(s); first: {_first_error(exc.messages)}",
            errors={"json": {"records": {str(i): e for i, e in exc.messages.items()}}},
        )
    return batch


def _unknown_by_row(batch: Validated) -> dict[int, list[str]]:
    """Record index -> features with a category the model did not see (and counted in the metrics)."""
    unknown_by_row: dict[int, list[str]] = {}
    for feature, rows in batch.unknown.items():
        m.UNKNOWN_CATEGORIES.labels(feature).inc(len(rows))
        for i in rows:
            unknown_by_row.setdefault(i, []).append(feature)
    return unknown_by_row


# --------------------------------------------------------------------------- blueprints
def _blueprints(settings: ServiceSettings) -> list[Blueprint]:
    v1 = Blueprint("v1", __name__, url_prefix="/v1", description="Predictions, model information, feedback")
    admin = Blueprint(
        "admin", __name__, url_prefix="/v1/admin", description="Operator endpoints (admin token)"
    )
    ops = Blueprint("ops", __name__, url_prefix="", description="Liveness, readiness, metrics")

    @v1.route("/predict", methods=["POST"])
    @v1.doc(
        security=API_KEY,
        summary="Score one or many records",
        requestBody=_json_body("PredictRequest", f"1 to {settings.max_batch_size} records"),
    )
    @v1.alt_response(
        200,
        schema=PredictResponse,
        success=True,
        description="one prediction per record",
        headers={"X-Request-ID": {"description": "the request id", "schema": {"type": "string"}}},
    )
    @_errors(v1, 400, 401, 403, 413, 422, 503)
    @require_api_key
    def predict():
        started = time.perf_counter()
        model = _current_model()
        batch = _validated_batch(model, settings.max_batch_size)
        scores = model.predict(batch)
        labels = model.labels(scores)
        m.PREDICT_SECONDS.labels(model.predictor.kind).observe(time.perf_counter() - started)
        unknown_by_row = _unknown_by_row(batch)
        score_list, label_list = scores.tolist(), labels.tolist()
        out = [
            {"index": i, "probability": s, "label": lab}
            for i, (s, lab) in enumerate(zip(score_list, label_list, strict=True))
        ]
        for i, feats in unknown_by_row.items():
            out[i]["unknown_categories"] = feats
        rid = g.request_id
        latency_ms = (time.perf_counter() - started) * 1000.0
        state().plog.submit(rid, now(), model.name, model.version, batch.records, scores, labels, latency_ms)
        positives = int(labels.sum())
        if positives:
            m.PREDICTIONS.labels(model.version, "1").inc(positives)
        if positives < batch.n:
            m.PREDICTIONS.labels(model.version, "0").inc(batch.n - positives)
        m.observe_many(m.SCORES.labels(model.version), scores)
        m.BATCH_SIZE.observe(batch.n)
        body = jsonfast.dumps(
            {
                "request_id": rid,
                "model_name": model.name,
                "model_version": model.version,
                "threshold": model.threshold,
                "predictions": out,
            }
        )
        return Response(
            body, status=200, mimetype="application/json", headers={"X-Model-Version": model.version}
        )

    @v1.route("/explain", methods=["POST"])
    @v1.doc(
        security=API_KEY,
        summary="Per-feature contributions (log-odds) to the score of one or many records",
        description=(
            "Same body, limits, validation and auth as /v1/predict. For each record: the probability, "
            "the base value and one additive contribution per input feature (one-hot columns summed), "
            "in log-odds, with base_value + sum(contributions) = logit(probability). XGBoost: exact tree "
            "SHAP (XGBoost's pred_contribs); logistic regression: coef * x with base = intercept. "
            "Explain requests are not written to the prediction log (no feedback on them)."
        ),
        requestBody=_json_body("PredictRequest", f"1 to {settings.max_batch_size} records"),
    )
    @v1.alt_response(
        200,
        schema=ExplainResponse,
        success=True,
        description="one explanation per record",
        headers={"X-Request-ID": {"description": "the request id", "schema": {"type": "string"}}},
    )
    @_errors(v1, 400, 401, 403, 413, 422, 501, 503)
    @require_api_key
    def explain():
        model = _current_model()
        batch = _validated_batch(model, settings.max_batch_size)
        explainer = model.explainer
        if explainer is None:
            abort(501, message=f"no explanations for {model.name} v{model.version}: {model.explain_note}")
        exp = explainer.explain(batch)
        scores = model.predict(batch)
        labels = model.labels(scores)
        out = records_payload(exp, batch.records, scores, labels)
        for i, feats in _unknown_by_row(batch).items():
            out[i]["unknown_categories"] = feats
        m.EXPLAINED.labels(model.version, explainer.method).inc(batch.n)
        body = json.dumps(
            {
                "request_id": g.request_id,
                "model_name": model.name,
                "model_version": model.version,
                "threshold": model.threshold,
                "method": explainer.method,
                "units": UNITS,
                "explanations": out,
            },
            separators=(",", ":"),
        )
        return Response(
            body, status=200, mimetype="application/json", headers={"X-Model-Version": model.version}
        )

    @v1.route("/model", methods=["GET"])
    @v1.doc(security=API_KEY, summary="The model version being served")
    @v1.alt_response(200, schema=ModelResponse, success=True, description="name, version, metrics, schema")
    @_errors(v1, 401, 403, 503)
    @require_api_key
    def model_info():
        return Response(json.dumps(_current_model().describe()), mimetype="application/json")

    @v1.route("/feedback", methods=["POST"])
    @v1.doc(
        security=API_KEY,
        summary="Record the true label of a scored record",
        requestBody=_json_body("FeedbackRequest", "request id, record index, true label"),
    )
    @v1.alt_response(201, schema=FeedbackResponse, success=True, description="stored")
    @_errors(v1, 400, 401, 403, 404, 409, 413, 422, 503)
    @require_api_key
    def post_feedback():
        body = _read_json()
        try:
            data = FeedbackRequest().load(body if isinstance(body, dict) else {"_": body})
        except ValidationError as exc:
            m.FEEDBACK.labels("invalid").inc()
            msgs = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
            first = next(iter(msgs.items()))
            abort(
                422,
                message=f"{first[0]}: {first[1][0] if isinstance(first[1], list) else first[1]}",
                errors={"json": msgs},
            )
        rid, index, label = str(data["request_id"]), data["record_index"], data["label"]
        st = state()
        try:
            found = _prediction_exists(st, rid, index)
        except Exception as exc:  # noqa: BLE001 - database down
            m.FEEDBACK.labels("unavailable").inc()
            log.warning("feedback: database unavailable: %s", exc)
            abort(
                503,
                message="the prediction log database is unavailable; retry later",
                headers={"Retry-After": "5"},
            )
        if not found:
            m.FEEDBACK.labels("not_found").inc()
            abort(404, message=f"no prediction with request_id {rid} and record_index {index}")
        received = now()
        from sqlalchemy import insert
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        try:
            with st.plog.engine.begin() as conn:
                conn.execute(
                    insert(feedback).values(
                        request_id=rid, record_index=index, label=label, received_at=received
                    )
                )
        except IntegrityError:
            m.FEEDBACK.labels("duplicate").inc()
            abort(409, message=f"record {index} of request {rid} already has a label")
        except SQLAlchemyError as exc:
            m.FEEDBACK.labels("unavailable").inc()
            log.warning("feedback: database unavailable: %s", exc)
            abort(
                503,
                message="the prediction log database is unavailable; retry later",
                headers={"Retry-After": "5"},
            )
        m.FEEDBACK.labels("stored").inc()
        return Response(
            json.dumps(
                {
                    "request_id": rid,
                    "record_index": index,
                    "label": label,
                    "received_at": received.isoformat(),
                }
            ),
            status=201,
            mimetype="application/json",
        )

    @admin.route("/reload", methods=["POST"])
    @admin.doc(security=ADMIN, summary="Check the registry alias now and load what it points at")
    @admin.arguments(ReloadQuery, location="query")
    @admin.alt_response(200, schema=ReloadResponse, success=True, description="reloaded (or already current)")
    @admin.alt_response(503, schema=ReloadResponse, description="loading failed: the old model keeps serving")
    @_errors(admin, 401, 403, 422)
    @require_admin
    def reload(query):
        st = state()
        result = st.manager.check(force=query["force"])
        st.manager.request_reload_everywhere(force=query["force"])
        return Response(
            json.dumps(result), status=503 if result["error"] else 200, mimetype="application/json"
        )

    @ops.route("/health", methods=["GET"])
    @ops.doc(summary="Liveness: the process answers (open)")
    @ops.alt_response(200, schema=HealthResponse, success=True, description="alive")
    def health():
        return Response(json.dumps({"status": "ok", "pid": os.getpid()}), mimetype="application/json")

    @ops.route("/ready", methods=["GET"])
    @ops.doc(summary="Readiness: a model is loaded (open)")
    @ops.arguments(ReadyQuery, location="query")
    @ops.alt_response(200, schema=ReadyResponse, success=True, description="ready (status ok or degraded)")
    @ops.alt_response(503, schema=ReadyResponse, description="not ready")
    @_errors(ops, 422)
    def ready(query):
        st = state()
        model = st.manager.current
        db_ok = st.db_reachable()
        registry = {True: "ok", False: "unreachable", None: "unknown"}[st.manager.registry_ok]
        degraded = (not db_ok) or st.manager.registry_ok is False or st.manager.last_error is not None
        is_ready = model is not None and not (query["strict"] and degraded)
        body = {
            "ready": is_ready,
            "status": "not_ready" if model is None else ("degraded" if degraded else "ok"),
            "model_name": st.settings.model_name,
            "model_version": model.version if model else None,
            "predictor": model.predictor.kind if model else None,
            "registry": registry,
            "database": "ok" if db_ok else "unreachable",
            "reload_error": st.manager.last_error,
            "reload_error_at": st.manager.last_error_at,
            "last_check_at": st.manager.last_check_at,
            "log_queue": st.plog.queued(),
            "spool_files": len(st.plog.spooled_files()),
        }
        return Response(json.dumps(body), status=200 if is_ready else 503, mimetype="application/json")

    return [v1, admin, ops]


def _prediction_exists(st: ServiceState, rid: str, index: int) -> bool:
    """In the database, or still queued here (flushed first), or queued in another worker (waited for)."""
    from sqlalchemy import select

    def in_db() -> bool:
        with st.plog.engine.connect() as conn:
            row = conn.execute(
                select(predictions.c.id).where(
                    predictions.c.request_id == rid, predictions.c.record_index == index
                )
            ).first()
        return row is not None

    if in_db():
        return True
    if st.plog.is_pending(rid):
        st.plog.flush(timeout=10.0)
        if not st.plog.db_ok:
            raise RuntimeError("prediction spooled: database unavailable")
        return in_db()
    # another worker may still hold it in its queue: wait until any worker would have flushed it
    age = request_id_age(rid)
    settle = st.settings.log_flush_seconds * 4 + 1.0
    if age is None or age < 0 or age > settle:
        return False
    deadline = time.monotonic() + (settle - age)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if in_db():
            return True
    return in_db()


# --------------------------------------------------------------------------- factory
def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
        )
    logging.getLogger("model_service").setLevel(level)


def create_app(settings: ServiceSettings | None = None, *, start_background: bool = True) -> Flask:
    """Build the app: settings checked, champion loaded (or polled for), log writer started."""
    settings = (settings or ServiceSettings.from_env()).check()
    _configure_logging(settings.log_level)
    import swagger_ui_bundle

    app = Flask("model_service")
    app.config.update(
        API_TITLE="Churn model service",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL=SWAGGER_STATIC,
        OPENAPI_SWAGGER_UI_CONFIG={"persistAuthorization": True, "displayRequestDuration": True},
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_SPEC_OPTIONS={
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
    )
    api = ServiceApi(app)
    api.spec.components.schema("PredictRequest", schema=predict_request_schema([], settings.max_batch_size))
    api.spec.components.schema("FeedbackRequest", schema=FeedbackRequest)

    static_root = Path(swagger_ui_bundle.swagger_ui_path)

    @app.route(SWAGGER_STATIC + "<path:filename>")
    def swagger_static(filename: str):
        return send_from_directory(static_root, filename, max_age=3600)

    trigger = (
        Path(settings.prometheus_multiproc_dir) / "reload-request"
        if settings.prometheus_multiproc_dir
        else None
    )
    manager = ModelManager(settings, trigger_file=trigger)
    plog = PredictionLog(
        settings.database_url,
        settings.spool_dir,
        queue_size=settings.log_queue_size,
        batch_size=settings.log_batch_size,
        flush_seconds=settings.log_flush_seconds,
        metrics=m.LogMetrics(),
    )
    st = ServiceState(settings, manager, plog)
    app.extensions["model_service"] = st
    for blp in _blueprints(settings):
        api.register_blueprint(blp)
    _patch_record_ref(api)

    @app.before_request
    def _request_id():
        g.request_id = new_request_id()

    @app.after_request
    def _headers(resp: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid:
            resp.headers["X-Request-ID"] = rid
        return resp

    _metrics(app, multiprocess=settings.prometheus_multiproc_dir is not None)
    m.MODEL_LOADED.set(0)
    m.LOG_DB_UP.set(1)
    manager.check()
    if start_background:
        plog.start()
        manager.start()
    else:  # tests drive the writer by hand
        plog.spool_dir.mkdir(parents=True, exist_ok=True)
        plog._ensure_tables()
    with _STATES_LOCK:
        _STATES.append(st)
    return app


def _patch_record_ref(api: ServiceApi) -> None:
    """PredictRequest.records items point at the live PredictRecord component."""
    schemas = api.spec.components.schemas
    schemas["PredictRequest"]["properties"]["records"]["items"] = {
        "$ref": "#/components/schemas/PredictRecord"
    }
    if "PredictRecord" not in schemas:
        api.spec.components.schema(
            "PredictRecord",
            {"type": "object", "description": "no model loaded yet: the schema appears once one is"},
        )


def _metrics(app: Flask, multiprocess: bool) -> None:
    buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    if multiprocess:  # under gunicorn (gunicorn_conf.py exports the folder)
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        exporter = GunicornInternalPrometheusMetrics(app, group_by="endpoint", buckets=buckets)
    else:
        from prometheus_flask_exporter import PrometheusMetrics

        exporter = PrometheusMetrics(app, group_by="endpoint", buckets=buckets, registry=m.registry())
    app.extensions["prometheus_exporter"] = exporter


def check_settings_or_exit() -> ServiceSettings:
    """For command-line entry points: a one-line error and exit code 2 on a bad environment."""
    import sys

    try:
        return ServiceSettings.from_env().check()
    except SettingsError as exc:
        print(f"model_service: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
