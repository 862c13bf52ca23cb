"""The flask-smorest `Api` of the service and the pieces every blueprint documents itself with.

`ServiceApi`'s /openapi.json shows the record schema of the model being served (`PredictRecord`),
documents /metrics (served by prometheus-flask-exporter, not by a blueprint) and fills the per-app
values (`{max_batch_size}`) into descriptions; its 405 answers list the allowed methods.
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, request
from flask_smorest import Api, Blueprint

from model_service.state import EXTENSION

API_KEY = [{"ApiKeyAuth": []}]
ADMIN = [{"AdminToken": []}]

ERRORS = {
    400: "malformed JSON (or a key repeated in an object)",
    401: "missing credentials",
    403: "wrong credentials",
    404: "unknown request id or record",
    409: "this record already has a label",
    413: "body or batch over the limit",
    415: "Content-Type is not application/json",
    422: "invalid input: the message and `errors` name the record index and field",
    501: "the served model has no exact explainer (neither XGBoost nor logistic regression)",
    503: "not available now (no model loaded, or the database is down)",
}

METRICS_PATH = {
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


def errors(blp: Blueprint, *codes: int):
    """Document these error answers (descriptions from ERRORS) on a view."""

    def deco(view):
        for code in codes:
            view = blp.alt_response(code, description=ERRORS[code])(view)
        return view

    return deco


def json_body(schema_ref: str, description: str) -> dict[str, Any]:
    """A required JSON request body; `description` may name per-app values (`{max_batch_size}`)."""
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def served_example(model) -> dict[str, Any]:
    """Swagger's example record: the one the model was trained with (`example_record` in its metadata:
    the config's example_record or a reference record), else one built from the feature schema; either
    way one the validator accepts, so "Try it out" answers 200."""
    from model_service.request_schema import field_example

    candidates = [model.metadata.get("example_record"), {s.name: field_example(s) for s in model.specs}]
    for example in candidates:
        if isinstance(example, dict) and example:
            try:
                model.validator.validate([dict(example)])
            except Exception:  # noqa: BLE001, S112 - an unusable example: try the next one
                continue
            return dict(example)
    return {}


def _first_query_error(errors: Any) -> str:
    """A query parameter's 422 (webargs gives `errors` only): the message names the field."""
    fields = (errors or {}).get("query") if isinstance(errors, dict) else None
    if isinstance(fields, dict) and fields:
        name, problems = next(iter(fields.items()))
        problem = problems[0] if isinstance(problems, list) and problems else problems
        return f"query parameter {name}: {problem}"[:300]
    return "invalid input"


class ServiceApi(Api):
    """flask-smorest Api whose /openapi.json shows the record schema of the model being served."""

    def __init__(self, app, *, doc_values: dict[str, Any]):
        self.doc_values = doc_values
        super().__init__(app)

    def handle_http_exception(self, error):
        payload, code, headers = super().handle_http_exception(error)
        allowed = getattr(error, "valid_methods", None)
        if code == 405 and allowed:  # RFC 9110: a 405 lists the allowed methods
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        if isinstance(payload, dict) and "message" not in payload and code == 422:
            payload["message"] = _first_query_error(payload.get("errors"))
        if isinstance(payload, dict) and "message" not in payload and code in (404, 405):
            path = request.path[:100]
            payload["message"] = (
                f"no endpoint at {path}"
                if code == 404
                else f"method {request.environ.get('REQUEST_METHOD', '?')[:20]} not allowed on {path}"
                + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else "")
            )
        return payload, code, headers

    def patch_record_ref(self) -> None:
        """PredictRequest.records items point at the live PredictRecord component."""
        schemas = self.spec.components.schemas
        schemas["PredictRequest"]["properties"]["records"]["items"] = {
            "$ref": "#/components/schemas/PredictRecord"
        }
        if "PredictRecord" not in schemas:
            self.spec.components.schema(
                "PredictRecord",
                {"type": "object", "description": "no model loaded yet: the schema appears once one is"},
            )

    def _openapi_json(self):
        spec = self.spec.to_dict()
        st = current_app.extensions.get(EXTENSION)
        model = st.manager.current if st else None
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        if model is not None:
            record = self.ma_plugin.converter.schema2jsonschema(model.record_schema())
            record["description"] = (
                f"one record for {model.name} v{model.version}, derived from the model's feature schema"
            )
            schemas["PredictRecord"] = record
            example = served_example(model)
            request = schemas.get("PredictRequest", {}).get("properties", {}).get("records")
            if request is not None:
                request["example"] = [example]
            dataset = model.metadata.get("dataset")
            spec.setdefault("info", {})["title"] = f"{model.name} model service" + (
                f" (data set {dataset})" if dataset else ""
            )
        paths = spec.setdefault("paths", {})
        for operations in paths.values():
            for operation in operations.values():
                body = operation.get("requestBody") if isinstance(operation, dict) else None
                if body and "description" in body:
                    body["description"] = body["description"].format(**self.doc_values)
        paths["/metrics"] = METRICS_PATH  # served by prometheus-flask-exporter, documented here
        return current_app.response_class(json.dumps(spec, indent=2), mimetype="application/json")
