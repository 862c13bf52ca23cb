"""Request and response schemas of the endpoints (marshmallow, documented in the OpenAPI spec).

The schemas derived from the served model's feature schema (a record, /v1/predict's request and
response) are in `model_service.request_schema`; these are the fixed ones.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate


class Label(fields.Field):
    """A feedback label: 0 or 1, or a class value (a string, mapped to 0/1 by the served model's
    metadata in the view: model_service/api/feedback.py)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Must be 0, 1 or a class value, not a boolean.")
        if isinstance(value, int) and value in (0, 1):
            return value
        if isinstance(value, str) and 0 < len(value) <= 200:
            return value
        raise ValidationError("Must be 0, 1 or a class value (a string of 1 to 200 characters).")


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
    label = Label(
        required=True,
        metadata={
            "description": "the true outcome: 1 positive, 0 negative, or the data set's own class value "
            '(the served model\'s `positive_class` / `negative_class`, e.g. "Yes" / "No")',
            "oneOf": [
                {"type": "integer", "enum": [0, 1]},
                {"type": "string", "minLength": 1, "maxLength": 200},
            ],
        },
    )
    # checked by the route (model_service.api.inputs.parse_event_time): one parser and message for both bodies
    event_time = fields.Raw(
        metadata={
            "type": "string",
            "format": "date-time",
            "description": "when the outcome became known, in business time: an RFC 3339 date-time with a "
            "UTC offset or Z (e.g. 2026-12-01T09:30:00Z); not before the record's event time, at most "
            "1 day after the server's clock (else 422). Default: the time the label is received.",
        },
    )


class FeedbackResponse(Schema):
    request_id = fields.String(required=True)
    record_index = fields.Integer(required=True)
    label = fields.Integer(required=True)
    received_at = fields.String(required=True)
    event_time = fields.String(
        required=True,
        metadata={"description": "the label's event time (business time, ISO 8601; default received_at)"},
    )


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
    why = fields.Dict(
        metadata={
            "description": "why this version exists: retrain_trigger (drift, quality, new data, manual), "
            "retrain_reason, figures and the data's lineage (data_snapshot, data_parent, source_hash)"
        }
    )
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
    reload_error = fields.String(
        allow_none=True,
        metadata={
            "description": "the last reload failure, classified (registry unreachable, no alias, "
            "loading failed and the exception's class); never the exception's text"
        },
    )
    reload_error_at = fields.String(allow_none=True)
    last_check_at = fields.String(allow_none=True)
    log = fields.String(
        required=True,
        metadata={
            "description": "ok; unwritable (the last spool write failed, e.g. a full disk: predictions "
            "answer 503), backlogged (more than SPOOL_MAX_BYTES, or records older than SPOOL_MAX_AGE_SECONDS, "
            "wait in the spool for the database: predictions answer 503) or nearly_full (less than "
            "LOG_MIN_FREE_BYTES free on the spool's disk): not ready"
        },
    )
    log_error = fields.String(allow_none=True, metadata={"description": "why the log is not ok (no paths)"})
    log_queue = fields.Integer(required=True)
    spool_files = fields.Integer(required=True)


class ReadyQuery(Schema):
    strict = fields.Boolean(
        load_default=False,
        metadata={"description": "also answer 503 when the registry or the database is unreachable"},
    )


class HistoryQuery(Schema):
    limit = fields.Integer(
        load_default=100,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "the newest N moves (1 to 1000, default 100)"},
    )


class ChampionMove(Schema):
    id = fields.Integer(required=True)
    at = fields.String(required=True, metadata={"description": "when the alias moved (UTC, ISO 8601)"})
    until = fields.String(
        allow_none=True, metadata={"description": "the next move's time; null for the current champion"}
    )
    model_name = fields.String(required=True)
    from_version = fields.String(allow_none=True, metadata={"description": "null for the first champion"})
    to_version = fields.String(required=True)
    kind = fields.String(
        required=True,
        validate=validate.OneOf(("promotion", "forced_promotion", "rollback", "guard_rollback")),
        metadata={
            "description": "promotion (the gate, a retrain's gate), forced_promotion, rollback, guard_rollback"
        },
    )
    by = fields.String(required=True, metadata={"description": "who or what moved it (a user, guard)"})
    reason = fields.String(
        required=True,
        metadata={
            "description": "why: the gate verdict and the retrain's trigger, a rollback's reason, the guard's figures"
        },
    )
    details = fields.Dict(
        allow_none=True,
        metadata={
            "description": "the same as data: failed checks and the gate report, the guard's figures, rollback id"
        },
    )
    records_served = fields.Integer(
        required=True,
        metadata={"description": "predictions logged with to_version between this move and the next"},
    )
    records_by_version = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        required=True,
        metadata={
            "description": "every version's predictions in the interval (another version: a replica still following)"
        },
    )


class HistoryResponse(Schema):
    model_name = fields.String(required=True)
    limit = fields.Integer(required=True)
    count = fields.Integer(required=True)
    moves = fields.List(fields.Nested(ChampionMove), required=True, metadata={"description": "oldest first"})
