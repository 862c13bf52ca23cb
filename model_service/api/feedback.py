"""POST /v1/feedback: the true label of a scored record (201, 404 unknown record, 409 already labelled,
422 invalid, an `event_time` included, 503 while the prediction log database is down)."""

from __future__ import annotations

import json
import logging

from flask import Response
from flask_smorest import abort
from marshmallow import ValidationError

from model_service import metrics as m
from model_service.api.inputs import parse_event_time, read_json, refuse_event_time
from model_service.api.schemas import FeedbackRequest, FeedbackResponse
from model_service.api.spec import API_KEY, errors, json_body
from model_service.api.v1 import blp
from model_service.auth import require_api_key
from model_service.feedback import (
    DuplicateFeedback,
    FeedbackBeforeRecord,
    FeedbackNotFound,
    FeedbackUnavailable,
)
from model_service.prediction_log.store import now
from model_service.state import services

log = logging.getLogger("model_service")


def as_label(value: int | str) -> int:
    """0 or 1, or the data set's own class value as the served model knows it (its metadata's
    `positive_class` -> 1, `negative_class` -> 0); anything else is a 422 naming what is accepted."""
    if isinstance(value, int):  # the schema let through only 0 and 1
        return value
    model = services().manager.current
    meta = model.metadata if model is not None else {}
    classes = {
        str(meta[key]): number
        for key, number in (("positive_class", 1), ("negative_class", 0))
        if meta.get(key) is not None
    }
    if isinstance(value, str) and value in classes:
        return classes[value]
    m.FEEDBACK.labels("invalid").inc()
    accepted = ", ".join(["0", "1", *(f"{name!r} ({number})" for name, number in classes.items())])
    error = f"{value[:60]!r} is not a class of this model; one of {accepted}."
    abort(422, message=f"label: {error}", errors={"json": {"label": [error]}})


@blp.route("/feedback", methods=["POST"])
@blp.doc(
    security=API_KEY,
    summary="Record the true label of a scored record",
    requestBody=json_body("FeedbackRequest", "request id, record index, true label"),
)
@blp.alt_response(201, schema=FeedbackResponse, success=True, description="stored")
@errors(blp, 400, 401, 403, 404, 409, 413, 415, 422, 503)
@require_api_key
def post_feedback():
    body = read_json()
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
    rid, index, label = str(data["request_id"]), data["record_index"], as_label(data["label"])
    event_at = None
    if "event_time" in data:
        try:
            event_at = parse_event_time(data["event_time"], now())
        except ValueError as exc:
            m.FEEDBACK.labels("invalid").inc()
            refuse_event_time(str(exc))
    try:
        received, event_at = services().feedback.record(rid, index, label, event_at)
    except FeedbackNotFound as exc:
        m.FEEDBACK.labels("not_found").inc()
        abort(404, message=str(exc))
    except FeedbackBeforeRecord as exc:
        m.FEEDBACK.labels("invalid").inc()
        refuse_event_time(str(exc))
    except DuplicateFeedback as exc:
        m.FEEDBACK.labels("duplicate").inc()
        abort(409, message=str(exc))
    except FeedbackUnavailable as exc:
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
                "event_time": event_at.isoformat(),
            }
        ),
        status=201,
        mimetype="application/json",
    )
