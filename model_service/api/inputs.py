"""Reading a request: the JSON body (415 not JSON, 400 malformed, incomplete or a repeated key, 413 too large, 408 not
received in time, 503 too many bodies awaited: model_service.bodies), the served model (503 when none is
loaded) and a validated batch of records (413 over MAX_BATCH_SIZE, 422 naming the record index and field)
with its optional `event_time` (business time; 422 `event_time: ...` when it is not a date-time with a UTC
offset, or more than a day ahead of the server's clock).
Every rejection is counted in `model_service_validation_errors_total`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from flask import request
from flask_smorest import abort

from core.feature_schema import Validated
from model_service import jsonfast
from model_service import metrics as m
from model_service.bodies import BodyRefused
from model_service.prediction_log.store import now
from model_service.request_schema import MAX_ERRORS, RecordErrors
from model_service.served_model import LoadedModel
from model_service.state import services


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def read_json() -> Any:
    """The request's JSON body: 415 unless Content-Type is JSON, then read whole (`BodyReader.read`: 413
    too large, 400 incomplete, 408 too slow, 503 busy), 400 empty, malformed or with a key repeated in an
    object."""
    if not _is_json(request.mimetype):
        m.VALIDATION_ERRORS.labels("content_type", "").inc()
        got = request.mimetype or "none"
        abort(415, message=f"Content-Type must be application/json (got {got[:100]})")
    try:
        raw = services().bodies.read(request.environ)
    except BodyRefused as exc:
        m.VALIDATION_ERRORS.labels(exc.kind, "").inc()
        abort(exc.status, message=exc.message, headers=exc.headers)
    if not raw:
        m.VALIDATION_ERRORS.labels("json", "").inc()
        abort(400, message="empty body: send a JSON object")
    try:
        return jsonfast.loads_unique(raw)
    except jsonfast.DuplicateKeyError as exc:
        m.VALIDATION_ERRORS.labels("json", "").inc()
        abort(400, message=f"malformed JSON: {str(exc)[:200]}")
    except (ValueError, RecursionError) as exc:
        m.VALIDATION_ERRORS.labels("json", "").inc()
        abort(400, message=f"malformed JSON: {str(exc)[:200]}")


def current_model() -> LoadedModel:
    """The model serving this request (read once: a reload does not change it mid-request)."""
    manager = services().manager
    model = manager.current
    if model is None:
        abort(
            503,
            message=f"no model loaded yet: {manager.last_error or 'loading'}",
            headers={"Retry-After": "5"},
        )
    return model


def _first_error(errors: dict[int, dict[str, list[str]]]) -> str:
    i = min(errors)
    name, msgs = next(iter(errors[i].items()))
    return f"records[{i}].{name}: {msgs[0]}"


EVENT_TIME_EXAMPLE = "2026-12-01T09:30:00Z"
FUTURE_SLACK = timedelta(days=1)  # an event time this far past the server's clock is refused (clock skew)


def parse_event_time(value: Any, received: datetime) -> datetime:
    """A body's `event_time` (business time: when the event happened) as a UTC datetime: an RFC 3339 /
    ISO 8601 date-time with a UTC offset (or Z), at most FUTURE_SLACK after `received` (the server's
    clock). Raises ValueError with the message a 422 gives (after `event_time: `)."""
    if type(value) is not str:
        raise ValueError(f"must be a string: an RFC 3339 date-time, e.g. {EVENT_TIME_EXAMPLE}")
    try:
        parsed = datetime.fromisoformat(value) if len(value) <= 64 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"{value[:64]!r} is not an RFC 3339 date-time, e.g. {EVENT_TIME_EXAMPLE}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{value!r} needs a UTC offset, e.g. Z ({EVENT_TIME_EXAMPLE})")
    try:
        at = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range") from None
    if at > received + FUTURE_SLACK:
        raise ValueError(
            f"{value!r} is in the future: more than 1 day after the server's clock ({received.isoformat()})"
        )
    return at


def refuse_event_time(msg: str) -> NoReturn:
    """422 for a bad `event_time` (message `event_time: <msg>`)."""
    abort(422, message=f"event_time: {msg}", errors={"json": {"event_time": [msg]}})


BODY_KEYS = frozenset(("records", "event_time"))


def validated_batch(model: LoadedModel) -> tuple[Validated, datetime | None]:
    """The request body of /v1/predict and /v1/explain, checked: 400 malformed JSON, 413 over a limit,
    422 naming the record index and field (or `event_time`); validation errors counted in the metrics.
    Returns the batch and the body's event time (UTC; None when the body has none)."""
    max_batch_size = services().settings.max_batch_size
    body = read_json()
    if type(body) is not dict or "records" not in body:
        m.VALIDATION_ERRORS.labels("shape", "").inc()
        abort(
            422,
            message="body must be a JSON object with a 'records' list",
            errors={"json": {"records": ["Missing data for required field."]}},
        )
    extra = sorted(k for k in body if k not in BODY_KEYS) if len(body) > 1 else ()
    records = body["records"]
    if extra or type(records) is not list or not records:
        m.VALIDATION_ERRORS.labels("shape", "").inc()
        errs = {k: ["Unknown field."] for k in extra[:10]}
        if type(records) is not list:
            errs["records"] = ["Not a valid list."]
        elif not records:
            errs["records"] = ["Shorter than minimum length 1."]
        abort(422, message="; ".join(f"{k}: {v[0]}" for k, v in errs.items()), errors={"json": errs})
    event_at = None
    if len(body) > 1:  # the only other key left: event_time
        try:
            event_at = parse_event_time(body["event_time"], now())
        except ValueError as exc:
            m.VALIDATION_ERRORS.labels("shape", "").inc()
            refuse_event_time(str(exc))
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
    return batch, event_at


def unknown_by_row(batch: Validated) -> dict[int, list[str]]:
    """Record index -> features with a category the model did not see (and counted in the metrics)."""
    by_row: dict[int, list[str]] = {}
    for feature, rows in batch.unknown.items():
        m.UNKNOWN_CATEGORIES.labels(feature).inc(len(rows))
        for i in rows:
            by_row.setdefault(i, []).append(feature)
    return by_row
