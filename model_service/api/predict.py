"""POST /v1/predict (score records, log them) and POST /v1/explain (per-feature contributions)."""

from __future__ import annotations

import json
import time

from flask import Response, g
from flask_smorest import abort

from model_service import jsonfast
from model_service import metrics as m
from model_service.api.inputs import current_model, unknown_by_row, validated_batch
from model_service.api.schemas import ExplainResponse
from model_service.api.spec import API_KEY, errors, json_body
from model_service.api.v1 import blp
from model_service.auth import require_api_key
from model_service.explain import UNITS, records_payload
from model_service.prediction_log.store import now
from model_service.prediction_log.writer import LogBacklogged, LogUnavailable
from model_service.request_schema import PredictResponse
from model_service.state import services

REQUEST_ID_HEADER = {"X-Request-ID": {"description": "the request id", "schema": {"type": "string"}}}


@blp.route("/predict", methods=["POST"])
@blp.doc(
    security=API_KEY,
    summary="Score one or many records",
    requestBody=json_body("PredictRequest", "1 to {max_batch_size} records"),
)
@blp.alt_response(
    200,
    schema=PredictResponse,
    success=True,
    description="one prediction per record",
    headers=REQUEST_ID_HEADER,
)
@errors(blp, 400, 401, 403, 413, 415, 422, 503)
@require_api_key
def predict():
    started = time.perf_counter()
    model = current_model()
    batch, event_at = validated_batch(model)
    try:
        scores = model.predict(batch)
    except Exception:
        m.PREDICT_ERRORS.labels(model.version).inc(batch.n)  # the guard's error rate, by version
        raise
    labels = model.labels(scores)
    m.child(m.PREDICT_SECONDS, model.predictor.kind).observe(time.perf_counter() - started)
    by_row = unknown_by_row(batch)
    score_list, label_list = scores.tolist(), labels.tolist()
    out = [
        {"index": i, "probability": s, "label": lab}
        for i, (s, lab) in enumerate(zip(score_list, label_list, strict=True))
    ]
    for i, feats in by_row.items():
        out[i]["unknown_categories"] = feats
    rid = g.request_id
    latency_ms = (time.perf_counter() - started) * 1000.0
    try:  # durable (on disk) before the 200 leaves
        services().plog.submit(
            rid, now(), model.name, model.version, batch.records, scores, labels, latency_ms, event_at
        )
    except LogBacklogged as exc:
        abort(503, message=str(exc), headers={"Retry-After": "5"})
    except LogUnavailable:
        abort(503, message="the prediction log cannot be written; retry later", headers={"Retry-After": "5"})
    shadow = services().shadow
    if shadow is not None and shadow.enabled:  # the challenger scores it later, off the request path
        shadow.offer(rid, model.version, batch, now())
    positives = int(labels.sum())
    if positives:
        m.child(m.PREDICTIONS, model.version, "1").inc(positives)
    if positives < batch.n:
        m.child(m.PREDICTIONS, model.version, "0").inc(batch.n - positives)
    m.observe_many(m.child(m.SCORES, model.version), scores)
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
    return Response(body, status=200, mimetype="application/json", headers={"X-Model-Version": model.version})


@blp.route("/explain", methods=["POST"])
@blp.doc(
    security=API_KEY,
    summary="Per-feature contributions (log-odds) to the score of one or many records",
    description=(
        "Same body, limits, validation and auth as /v1/predict. For each record: the probability, "
        "the base value and one additive contribution per input feature (one-hot columns summed), "
        "in log-odds, with base_value + sum(contributions) = logit(probability). XGBoost: exact tree "
        "SHAP (XGBoost's pred_contribs); logistic regression: coef * x with base = intercept. "
        "Explain requests are not written to the prediction log (no feedback on them): an `event_time` "
        "is checked as on /v1/predict, then ignored."
    ),
    requestBody=json_body("PredictRequest", "1 to {max_batch_size} records"),
)
@blp.alt_response(
    200,
    schema=ExplainResponse,
    success=True,
    description="one explanation per record",
    headers=REQUEST_ID_HEADER,
)
@errors(blp, 400, 401, 403, 413, 415, 422, 501, 503)
@require_api_key
def explain():
    model = current_model()
    batch, _event_at = validated_batch(model)  # the same body as /v1/predict: event_time checked, unused
    explainer = model.explainer
    if explainer is None:
        abort(501, message=f"no explanations for {model.name} v{model.version}: {model.explain_note}")
    exp = explainer.explain(batch)
    scores = model.predict(batch)
    labels = model.labels(scores)
    out = records_payload(exp, batch.records, scores, labels)
    for i, feats in unknown_by_row(batch).items():
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
    return Response(body, status=200, mimetype="application/json", headers={"X-Model-Version": model.version})
