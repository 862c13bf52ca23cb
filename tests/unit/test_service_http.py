"""The model service's HTTP contract, in process (Flask's test client on `create_app`).

Auth, every 4xx and 5xx answer (status, message, headers), the response shapes and the OpenAPI
document, against an app without a model and one serving a small logistic regression fitted here on
the real feature schema (config/telco_churn.yaml). One parametrized case per bad input, so each fails
on its own. What needs real processes (reload across the server's workers, signals, the spool across
restarts, multiprocess metrics) stays in tests/integration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.store import feedback
from model_service import metrics as m
from model_service.app import create_app
from model_service.auth import matches
from model_service.prediction_log.request_ids import new_request_id
from model_service.prediction_log.writer import PredictionLog
from model_service.served_model import LoadedModel, build_loaded_model
from model_service.settings import ServiceSettings
from model_service.state import ServiceState
from tests.support.service_process import ADMIN_TOKEN, API_KEY, RECORD

MAX_BATCH = 5
MAX_BYTES = 4096
OTHER_KEY = "second-key-0123456789abcdef"
KEY = {"X-API-Key": API_KEY}
JSON = {**KEY, "Content-Type": "application/json"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NO_ALIAS = "model 'telco-churn' has no alias 'champion'"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_model() -> LoadedModel:
    """A logistic regression on the data set's feature schema, fitted on synthetic records (the
    contract needs a model that serves and explains, not a good one)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from core.dataset import load_config
    from core.fastpath import synthetic_records, to_frame
    from core.feature_schema import field_specs
    from core.features import build_preprocessor
    from core.settings import REPO_ROOT
    from model_service.request_schema import RecordValidator

    config = load_config(REPO_ROOT / "config" / "telco_churn.yaml")
    meta = {
        "feature_schema": [f.as_dict() for f in config.features],
        "threshold": 0.5,
        "algorithm": "logreg",
        "feature_importance": {"tenure": 0.6, "contract": 0.4},
        "git_commit": "abc123",
        "positive_class": "Yes",
        "negative_class": "No",
    }
    specs = field_specs(meta["feature_schema"])
    X = to_frame(RecordValidator(specs).validate(synthetic_records(specs, 300, seed=3)), specs)
    y = np.random.default_rng(0).integers(0, 2, len(X))
    pipe = Pipeline(
        [("preprocess", build_preprocessor(config, scale=True)), ("model", LogisticRegression(max_iter=500))]
    ).fit(X, y)
    return build_loaded_model("telco-churn", "3", "champion", pipe, meta, run_id="run-1")


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`make_app(model=None, **settings)`: the service app, its registry unreachable (no model loaded
    unless `model` is given), its prediction log on SQLite in tmp_path, no background threads."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    states: list[ServiceState] = []

    def build(model: LoadedModel | None = None, **overrides) -> Flask:
        settings = ServiceSettings.from_env(
            **{
                "tracking_uri": "http://127.0.0.1:9",  # nothing listens: no model, no wait
                "database_url": f"sqlite:///{tmp_path / 'service.db'}",
                "spool_dir": tmp_path / "spool",
                "prometheus_multiproc_dir": str(tmp_path / "multiproc"),
                "auth_enabled": True,
                "api_keys": (API_KEY, OTHER_KEY),
                "admin_token": ADMIN_TOKEN,
                "max_batch_size": MAX_BATCH,
                "max_request_bytes": MAX_BYTES,
                "model_alias": "champion",
                "model_name": "telco-churn",
                **overrides,
            }
        )
        app = create_app(settings, start_background=False)
        state = app.extensions["model_service"]
        states.append(state)
        if model is not None:
            state.manager.current = model
            state.manager.last_error = None
            state.manager.registry_ok = True  # as if loaded from a healthy registry
        return app

    yield build
    for state in states:
        state.shutdown()


@pytest.fixture
def app(make_app, tiny_model) -> Flask:
    return make_app(tiny_model)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def state(app) -> ServiceState:
    return app.extensions["model_service"]


def counter(metric, *labels: str) -> float:
    return metric.labels(*labels)._value.get()


def post(client, path: str, payload=None, *, data: str | bytes | None = None, headers=JSON):
    body = json.dumps(payload) if data is None else data
    return client.post(path, data=body, headers=headers)


def predicted(client, records=None) -> str:
    resp = post(client, "/v1/predict", {"records": records or [RECORD, RECORD]})
    assert resp.status_code == 200, resp.text
    return resp.get_json()["request_id"]


# --------------------------------------------------------------------------- auth
PROTECTED = [
    ("POST", "/v1/predict", {"records": [RECORD]}),
    ("POST", "/v1/explain", {"records": [RECORD]}),
    ("GET", "/v1/model", None),
    ("POST", "/v1/feedback", {"request_id": str(uuid.uuid4()), "label": 1}),
]


@pytest.mark.parametrize(("method", "path", "payload"), PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_missing_api_key_is_401(client, method, path, payload):
    resp = client.open(path, method=method, json=payload)
    assert resp.status_code == 401
    assert resp.get_json()["message"] == "missing API key: send it in the X-API-Key header"


@pytest.mark.parametrize(("method", "path", "payload"), PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_wrong_api_key_is_403(client, method, path, payload):
    resp = client.open(path, method=method, json=payload, headers={"X-API-Key": "not-the-key-0123456789"})
    assert resp.status_code == 403
    assert resp.get_json()["message"] == "invalid API key"


@pytest.mark.parametrize("key", [API_KEY, OTHER_KEY], ids=["first", "second"])
def test_every_configured_api_key_is_accepted(client, key):
    resp = client.get("/v1/model", headers={"X-API-Key": key})
    assert resp.status_code == 200


def test_key_comparison():
    assert matches("b" * 16, ("a" * 16, "b" * 16))
    assert not matches("b" * 15, ("b" * 16,))
    assert not matches("", ("a" * 16,))
    assert not matches("x", ())


MISSING_ADMIN = "missing admin token: send 'Authorization: Bearer <ADMIN_TOKEN>'"


@pytest.mark.parametrize(
    "headers",
    [{}, KEY, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {"Authorization": ADMIN_TOKEN}],
    ids=["none", "api-key-only", "basic", "empty-bearer", "no-scheme"],
)
def test_admin_without_bearer_token_is_401(client, headers):
    resp = client.post("/v1/admin/reload", headers=headers)
    assert resp.status_code == 401
    assert resp.get_json()["message"] == MISSING_ADMIN
    assert resp.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("token", [API_KEY, ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]])
def test_admin_with_wrong_token_is_403(client, token):
    resp = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403 and resp.get_json()["message"] == "invalid admin token"


def test_admin_disabled_without_admin_token(make_app, tiny_model):
    client = make_app(tiny_model, admin_token=None).test_client()
    resp = client.post("/v1/admin/reload", headers=ADMIN)
    assert resp.status_code == 403
    assert resp.get_json()["message"] == "admin endpoints are disabled: ADMIN_TOKEN is not set"


def test_auth_disabled_opens_everything(make_app, tiny_model):
    app = make_app(tiny_model, auth_enabled=False, api_keys=())
    app.extensions["model_service"].manager.check = lambda force=False: {"error": None, "force": force}
    client = app.test_client()
    assert client.post("/v1/predict", json={"records": [RECORD]}).status_code == 200
    assert client.get("/v1/model").status_code == 200
    assert client.post("/v1/admin/reload").status_code == 200


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/openapi.json", "/docs"])
def test_open_endpoints_need_no_credentials(client, path):
    assert client.get(path).status_code == 200


def test_swagger_ui_assets_are_served_locally(client):
    page = client.get("/docs").get_data(as_text=True)
    assert "/docs/static/swagger-ui.css" in page
    asset = client.get("/docs/static/swagger-ui.css")
    assert asset.status_code == 200 and asset.headers["Cache-Control"] == "public, max-age=3600"


# --------------------------------------------------------------------------- 400 and 413
JSON_PATHS = ["/v1/predict", "/v1/explain", "/v1/feedback"]


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "malformed JSON: "),
        ('{"records": [', "malformed JSON: "),
        ("", "empty body: send a JSON object"),
    ],
    ids=["malformed", "truncated", "empty"],
)
def test_bad_json_is_400(client, path, data, message):
    before = counter(m.VALIDATION_ERRORS, "json", "")
    resp = post(client, path, data=data)
    assert resp.status_code == 400
    assert resp.get_json()["message"].startswith(message)
    assert counter(m.VALIDATION_ERRORS, "json", "") == before + 1


@pytest.mark.parametrize("path", JSON_PATHS)
def test_body_over_max_request_bytes_is_413(client, path):
    before = counter(m.VALIDATION_ERRORS, "too_large", "")
    resp = post(client, path, {"records": [RECORD], "pad": "x" * MAX_BYTES})
    assert resp.status_code == 413
    assert resp.get_json()["message"] == f"request body over {MAX_BYTES} bytes"
    assert counter(m.VALIDATION_ERRORS, "too_large", "") == before + 1


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
def test_batch_over_max_batch_size_is_413(client, path):
    resp = post(client, path, {"records": [RECORD] * (MAX_BATCH + 1)})
    assert resp.status_code == 413
    assert resp.get_json()["message"] == "6 records: at most 5 per request (MAX_BATCH_SIZE)"


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
def test_batch_of_exactly_max_batch_size_is_accepted(client, path):
    assert post(client, path, {"records": [RECORD] * MAX_BATCH}).status_code == 200


# --------------------------------------------------------------------------- 422: the body's shape
SHAPE = "body must be a JSON object with a 'records' list"
SHAPE_CASES = {
    "list-body": ([RECORD], SHAPE, {"records": ["Missing data for required field."]}),
    "null-body": (None, SHAPE, {"records": ["Missing data for required field."]}),
    "number-body": (3, SHAPE, {"records": ["Missing data for required field."]}),
    "no-records": ({"rows": [RECORD]}, SHAPE, {"records": ["Missing data for required field."]}),
    "empty-records": (
        {"records": []},
        "records: Shorter than minimum length 1.",
        {"records": ["Shorter than minimum length 1."]},
    ),
    "records-object": ({"records": {}}, "records: Not a valid list.", {"records": ["Not a valid list."]}),
    "extra-key": ({"records": [RECORD], "x": 1}, "x: Unknown field.", {"x": ["Unknown field."]}),
}


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
@pytest.mark.parametrize(("payload", "message", "errors"), SHAPE_CASES.values(), ids=SHAPE_CASES.keys())
def test_body_shape_is_422(client, path, payload, message, errors):
    before = counter(m.VALIDATION_ERRORS, "shape", "")
    resp = post(client, path, payload)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["message"] == message and body["errors"] == {"json": errors}
    assert counter(m.VALIDATION_ERRORS, "shape", "") == before + 1


# --------------------------------------------------------------------------- 422: one invalid value
@dataclasses.dataclass(frozen=True)
class Raw:
    text: str

    @property
    def marker(self) -> str:
        return f"<raw {self.text}>"


RANGE = "Must be greater than or equal to 0 and less than or equal to 120."
RECORD_CASES = {
    "numeric-string": ({"tenure": "ten"}, "tenure", "Not a number."),
    "numeric-bool": ({"tenure": True}, "tenure", "Not a number."),
    "numeric-infinite": ({"tenure": Raw("1e400")}, "tenure", "Not a finite number."),
    "numeric-huge-int": ({"tenure": 10**400}, "tenure", "Not a finite number."),
    "numeric-above-max": ({"tenure": 121}, "tenure", RANGE),
    "numeric-below-min": ({"tenure": -1}, "tenure", RANGE),
    "numeric-null": ({"tenure": None}, "tenure", "Field may not be null."),
    "binary-bool": ({"female": True}, "female", "Must be 0 or 1."),
    "binary-two": ({"female": 2}, "female", "Must be 0 or 1."),
    "binary-string": ({"female": "1"}, "female", "Must be 0 or 1."),
    "categorical-number": ({"contract": 12}, "contract", "Not a valid string."),
    "categorical-null": ({"contract": None}, "contract", "Field may not be null."),
    "categorical-too-long": ({"contract": "x" * 65}, "contract", "Longer than maximum length 64."),
    "categorical-too-long-payment": (
        {"payment_method": "é" * 65},
        "payment_method",
        "Longer than maximum length 64.",
    ),
    "unknown-field": ({"extra": 1}, "extra", "Unknown field."),
    "missing-field": ({"tenure": "<drop>"}, "tenure", "Missing data for required field."),
}


def _record_json(change: dict) -> str:
    """{"records": [RECORD, RECORD with one change]} as JSON text: "<drop>" removes the field, a Raw value
    is spliced in as written (1e400 is no Python float)."""
    record = {
        k: (v.marker if isinstance(v, Raw) else v) for k, v in {**RECORD, **change}.items() if v != "<drop>"
    }
    text = json.dumps({"records": [RECORD, record]})
    for v in change.values():
        if isinstance(v, Raw):
            text = text.replace(json.dumps(v.marker), v.text)
    return text


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
@pytest.mark.parametrize(("change", "field", "error"), RECORD_CASES.values(), ids=RECORD_CASES.keys())
def test_invalid_value_is_422_naming_record_and_field(client, path, change, field, error):
    label = field if field != "extra" else "_other"
    before = counter(m.VALIDATION_ERRORS, "record", label)
    resp = post(client, path, data=_record_json(change))
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["message"] == f"1 invalid value(s); first: records[1].{field}: {error}"
    assert body["errors"] == {"json": {"records": {"1": {field: [error]}}}}
    assert counter(m.VALIDATION_ERRORS, "record", label) == before + 1


def test_an_unknown_category_up_to_the_cap_is_accepted(client):
    resp = post(client, "/v1/predict", {"records": [{**RECORD, "contract": "y" * 64}]})
    assert resp.status_code == 200
    assert resp.get_json()["predictions"][0]["unknown_categories"] == ["contract"]


def test_a_record_that_is_not_an_object_is_422(client):
    resp = post(client, "/v1/predict", {"records": [1, "x"]})
    assert resp.status_code == 422
    msg = "Invalid input type: each record must be a JSON object."
    assert resp.get_json()["errors"]["json"]["records"] == {"0": {"_schema": [msg]}, "1": {"_schema": [msg]}}
    assert resp.get_json()["message"] == f"2 invalid value(s); first: records[0]._schema: {msg}"


def test_every_invalid_record_is_reported_and_the_first_one_named(client):
    resp = post(
        client,
        "/v1/predict",
        {"records": [RECORD, {**RECORD, "tenure": "ten"}, {**RECORD, "contract": None, "x": 1}]},
    )
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["message"] == "3 invalid value(s); first: records[1].tenure: Not a number."
    assert body["errors"]["json"]["records"] == {
        "1": {"tenure": ["Not a number."]},
        "2": {"contract": ["Field may not be null."], "x": ["Unknown field."]},
    }


def test_a_rejected_request_is_not_logged(client, state):
    post(client, "/v1/predict", {"records": [RECORD, {**RECORD, "tenure": "ten"}]})
    assert state.plog.queued() == 0


# --------------------------------------------------------------------------- 405 and unknown paths
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/predict", "OPTIONS, POST"),
        ("GET", "/v1/explain", "OPTIONS, POST"),
        ("PUT", "/v1/feedback", "OPTIONS, POST"),
        ("POST", "/v1/model", "GET, HEAD, OPTIONS"),
        ("GET", "/v1/admin/reload", "OPTIONS, POST"),
        ("POST", "/health", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method_is_405_with_allow(client, method, path, allow):
    resp = client.open(path, method=method, headers=KEY)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == allow
    assert resp.get_json() == {
        "code": 405,
        "status": "Method Not Allowed",
        "message": f"method {method} not allowed on {path} (allowed: {allow})",
    }


def test_unknown_path_is_404(client):
    resp = client.get("/v1/nothing", headers=KEY)
    assert resp.status_code == 404 and resp.get_json()["code"] == 404
    assert resp.get_json()["message"] == "no endpoint at /v1/nothing"


# --------------------------------------------------------------------------- predict and explain: 200
def test_predict_answers_one_prediction_per_record(client, state, tiny_model):
    records = [RECORD, {**RECORD, "payment_method": "Bitcoin"}, {**RECORD, "total_charges": None}]
    before = counter(m.UNKNOWN_CATEGORIES, "payment_method")
    resp = post(client, "/v1/predict", {"records": records})
    assert resp.status_code == 200
    body = resp.get_json()
    assert resp.headers["X-Request-ID"] == body["request_id"]
    assert resp.headers["X-Model-Version"] == "3"
    assert uuid.UUID(body["request_id"]).version == 7
    assert set(body) == {"request_id", "model_name", "model_version", "threshold", "predictions"}
    assert (body["model_name"], body["model_version"], body["threshold"]) == ("telco-churn", "3", 0.5)
    preds = body["predictions"]
    assert [p["index"] for p in preds] == [0, 1, 2]
    expected = tiny_model.predict(tiny_model.validator.validate(records))
    assert [p["probability"] for p in preds] == pytest.approx(expected.tolist(), abs=1e-9)
    assert all(p["label"] == int(p["probability"] >= 0.5) for p in preds)
    assert "unknown_categories" not in preds[0] and preds[1]["unknown_categories"] == ["payment_method"]
    assert counter(m.UNKNOWN_CATEGORIES, "payment_method") == before + 1
    # durable in the spool before the answer, in this worker's segment (no writer process here)
    assert state.plog.queued() == 3
    assert state.plog.spool.find(body["request_id"], 2) is not None


def test_predict_is_503_when_the_records_cannot_be_made_durable(client, state, monkeypatch):
    """No 200 for records that are not on disk: a spool that cannot be written refuses the request."""

    def disk_full(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.plog.spool, "append", disk_full)
    resp = post(client, "/v1/predict", {"records": [RECORD]})
    assert resp.status_code == 503
    assert resp.get_json()["message"] == "the prediction log cannot be written; retry later"
    assert resp.headers["Retry-After"] == "5" and state.plog.queued() == 0


def test_ready_is_503_naming_the_log_while_the_spool_cannot_be_written(client, state, monkeypatch):
    """A full disk: predictions answer 503, and so does /ready (a load balancer stops sending traffic
    there); a successful write, or a probe of the spool folder, makes it ready again."""
    real = os.write

    def disk_full(fd, data):
        if "spool" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        return real(fd, data)

    assert client.get("/ready").get_json()["log"] == "ok"
    monkeypatch.setattr(os, "write", disk_full)
    assert post(client, "/v1/predict", {"records": [RECORD]}).status_code == 503
    ready = client.get("/ready")
    body = ready.get_json()
    assert ready.status_code == 503 and body["ready"] is False and body["status"] == "not_ready"
    assert body["log"] == "unwritable" and body["model_version"] == "3"
    assert body["log_error"] == (
        "the prediction log cannot be written: spool write failed (ENOSPC: No space left on device)"
    )
    monkeypatch.setattr(os, "write", real)
    assert post(client, "/v1/predict", {"records": [RECORD]}).status_code == 200
    ready = client.get("/ready")
    assert (
        ready.status_code == 200 and ready.get_json()["log"] == "ok" and ready.get_json()["log_error"] is None
    )


def test_ready_is_503_while_the_spool_disk_is_nearly_full(make_app, tiny_model, monkeypatch):
    app = make_app(tiny_model, log_min_free_bytes=4096)
    monkeypatch.setattr(app.extensions["model_service"].plog.spool, "free_bytes", lambda: 1000)
    ready = app.test_client().get("/ready")
    body = ready.get_json()
    assert ready.status_code == 503 and body["log"] == "nearly_full" and body["status"] == "not_ready"
    assert body["log_error"] == (
        "the prediction log's disk is nearly full: 1000 bytes free, less than LOG_MIN_FREE_BYTES (4096)"
    )


def test_each_request_has_its_own_request_id(client):
    ids = {post(client, "/v1/predict", {"records": [RECORD]}).headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [("GET", "/health", {}), ("POST", "/v1/predict", {}), ("GET", "/v1/nothing", {})],
    ids=["200", "401", "404"],
)
def test_every_answer_carries_a_request_id(client, method, path, headers):
    rid = client.open(path, method=method, headers=headers).headers["X-Request-ID"]
    assert uuid.UUID(rid).version == 7


def test_explain_answers_contributions_and_logs_nothing(client, state):
    resp = post(client, "/v1/explain", {"records": [RECORD, {**RECORD, "contract": "Two year"}]})
    assert resp.status_code == 200
    body = resp.get_json()
    assert resp.headers["X-Request-ID"] == body["request_id"] and resp.headers["X-Model-Version"] == "3"
    assert body["units"] == "log-odds" and body["method"] == "linear"
    assert set(body) == {
        "request_id",
        "model_name",
        "model_version",
        "threshold",
        "method",
        "units",
        "explanations",
    }
    pred = post(client, "/v1/predict", {"records": [RECORD, {**RECORD, "contract": "Two year"}]}).get_json()
    for exp, p in zip(body["explanations"], pred["predictions"], strict=True):
        assert exp["probability"] == pytest.approx(p["probability"], abs=1e-9) and exp["label"] == p["label"]
        assert exp["logit"] == pytest.approx(
            exp["base_value"] + sum(c["contribution"] for c in exp["contributions"]), abs=1e-6
        )
        assert {c["feature"] for c in exp["contributions"]} == set(RECORD)
    assert (
        state.plog.spool.find(body["request_id"], 0) is None and state.plog.queued() == 2
    )  # the predict only


def test_explain_without_an_explainer_is_501(make_app, tiny_model):
    model = dataclasses.replace(tiny_model, explainer=None, explain_note="explanations unavailable: no")
    resp = post(make_app(model).test_client(), "/v1/explain", {"records": [RECORD]})
    assert resp.status_code == 501
    assert resp.get_json()["message"] == "no explanations for telco-churn v3: explanations unavailable: no"


# --------------------------------------------------------------------------- no model: 503
@pytest.mark.parametrize(("method", "path", "payload"), PROTECTED[:3], ids=[p for _, p, _ in PROTECTED[:3]])
def test_without_a_model_the_model_endpoints_are_503(make_app, method, path, payload):
    client = make_app().test_client()  # the registry is unreachable
    resp = client.open(path, method=method, json=payload, headers=KEY)
    assert resp.status_code == 503
    assert resp.get_json()["message"].startswith("no model loaded yet: loading telco-churn failed: ")
    assert "registry unreachable" in resp.get_json()["message"]
    assert resp.headers["Retry-After"] == "5"


def test_without_a_model_ready_is_503_and_health_200(make_app):
    client = make_app().test_client()
    ready = client.get("/ready")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["ready"] is False and body["status"] == "not_ready" and body["model_version"] is None
    assert body["reload_error"] == "registry unreachable"  # not mistaken for "no champion yet"
    assert body["registry"] == "unreachable"
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json() == {"status": "ok", "pid": os.getpid()}


def _metric(name: str) -> float:
    from model_service import metrics as m

    return sum(s.value for metric in m.registry().collect() for s in metric.samples if s.name == name)


def test_no_champion_yet_is_a_state_not_an_error_storm(make_app, tmp_path, caplog):
    """A reachable registry without the champion alias: one warning, no failure counted, /ready and
    the champion-missing gauge say what to do; the first load clears it."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()  # an empty registry: nothing promoted
    app = make_app(tracking_uri=uri)
    manager = app.extensions["model_service"].manager
    failures_before = _metric("model_service_reloads_total")
    caplog.set_level("DEBUG", logger="model_service.served_model")
    for _ in range(5):
        result = manager.check()
    assert result["version"] is None and result["error"].startswith("no champion yet")
    warnings = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR") and "champion" in r.message]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert _metric("model_service_champion_missing") == 1
    assert _metric("model_service_reload_failing") == 0
    assert _metric("model_service_reloads_total") == failures_before  # no failure counted
    body = app.test_client().get("/ready").get_json()
    assert body["status"] == "not_ready" and body["registry"] == "ok"
    assert body["reload_error"] == f"no champion yet: {NO_ALIAS}: train and gate a model"


# --------------------------------------------------------------------------- model, ready, reload
def test_model_describes_the_served_version(client, tiny_model):
    resp = client.get("/v1/model", headers=KEY)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body == json.loads(json.dumps(tiny_model.describe()))
    assert (body["name"], body["version"], body["alias"], body["run_id"]) == (
        "telco-churn",
        "3",
        "champion",
        "run-1",
    )
    assert [f["name"] for f in body["feature_schema"]] == list(RECORD)
    assert body["feature_importance"] == [
        {"feature": "tenure", "importance": 0.6},
        {"feature": "contract", "importance": 0.4},
    ]
    assert body["predictor"] == "numpy" and body["explanation_method"] == "linear"


def test_ready_reports_model_registry_database_and_log(client, state):
    predicted(client)
    resp = client.get("/ready")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["ready"] is True and body["status"] == "ok"
    assert (body["model_name"], body["model_version"], body["predictor"]) == ("telco-churn", "3", "numpy")
    assert body["database"] == "ok" and body["log_queue"] == 2 and body["spool_files"] == 0


@pytest.mark.parametrize(
    ("degrade", "field", "value"),
    [
        ("reload_error", "reload_error", "loading telco-churn v4 failed (RuntimeError)"),
        ("registry", "registry", "unreachable"),
        ("database", "database", "unreachable"),
    ],
)
def test_ready_degraded_is_200_and_503_when_strict(client, state, monkeypatch, degrade, field, value):
    if degrade == "reload_error":
        state.manager._failure("3", "4", RuntimeError("boom at postgresql://admin:secret@db-7.internal"), "x")
    elif degrade == "registry":
        state.manager.registry_ok = False
    else:
        monkeypatch.setattr(state.plog, "ping", lambda: False)
        state._ping_cache = (0.0, True)
    lenient = client.get("/ready")
    assert lenient.status_code == 200
    assert lenient.get_json()["status"] == "degraded" and lenient.get_json()[field] == value
    assert "secret" not in lenient.text and "db-7" not in lenient.text
    strict = client.get("/ready", query_string={"strict": "true"})
    assert strict.status_code == 503 and strict.get_json()["ready"] is False


@pytest.mark.parametrize(
    ("reason", "error", "shown"),
    [
        (
            "registry",
            RuntimeError("registry unreachable: http://ops:pw@mlflow-3:5000 refused"),
            "registry unreachable",
        ),
        ("OperationalError", OSError("could not connect to server db-7 as user admin"), "failed (OSError)"),
    ],
)
def test_ready_shows_a_classified_error_never_the_exception_text(make_app, reason, error, shown):
    app = make_app()
    app.extensions["model_service"].manager._failure(None, None, error, reason)
    body = app.test_client().get("/ready").get_json()
    assert shown in body["reload_error"]
    for secret in ("pw", "mlflow-3", "db-7", "admin"):
        assert secret not in body["reload_error"]


@pytest.mark.parametrize("path", ["/ready?strict=maybe", "/v1/admin/reload?force=maybe"])
def test_bad_query_parameter_is_422(client, path):
    resp = client.open(path, method="POST" if "reload" in path else "GET", headers=ADMIN)
    assert resp.status_code == 422
    assert list(resp.get_json()["errors"]["query"].values()) == [["Not a valid boolean."]]


@pytest.mark.parametrize(("query", "force"), [("", False), ("?force=true", True)])
def test_admin_reload_checks_here_and_tells_the_other_workers(client, state, monkeypatch, query, force):
    calls = []

    def check(force=False):
        calls.append(force)
        return {"changed": True, "previous_version": "3", "version": "4", "error": None, "predictor": "numpy"}

    monkeypatch.setattr(state.manager, "check", check)
    resp = client.post("/v1/admin/reload" + query, headers=ADMIN)
    assert resp.status_code == 200
    assert resp.get_json() == check() and calls[0] is force
    trigger = Path(state.settings.prometheus_multiproc_dir) / "reload-request"
    assert trigger.read_text() == ("force" if force else "check")


def test_admin_reload_failure_is_503_with_the_result(client, state):
    resp = client.post("/v1/admin/reload", headers=ADMIN)  # the registry is unreachable here
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["version"] == "3" and body["previous_version"] == "3"
    assert "registry unreachable" in body["error"]


# --------------------------------------------------------------------------- the champion timeline
def _moves(state, *moves: tuple[str | None, str, str, int]) -> None:
    """Write champion moves (from, to, kind, minutes ago) to the service's store, as core.rollout does."""
    from core import registry, rollout, store

    with state.plog.engine.begin() as conn:
        for from_v, to_v, kind, ago in moves:
            move = registry.AliasMove(
                "champion", from_v, to_v, "", "alice" if kind != "rollback" else "bob", f"why {to_v}"
            )
            move_id = rollout.record_move(conn, "telco-churn", move, kind, {"n": 1})
            at = store.utcnow() - timedelta(minutes=ago)
            conn.execute(
                store.champion_moves.update().where(store.champion_moves.c.id == move_id).values(at=at)
            )


@pytest.mark.parametrize("headers", [{}, KEY], ids=["none", "api-key-only"])
def test_history_needs_the_admin_token(client, headers):
    resp = client.get("/v1/model/history", headers=headers)
    assert resp.status_code == 401 and resp.get_json()["message"] == MISSING_ADMIN


def test_history_with_a_wrong_token_is_403(client):
    resp = client.get("/v1/model/history", headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 403 and resp.get_json()["message"] == "invalid admin token"


@pytest.mark.parametrize("limit", ["0", "1001", "-5", "ten", "1.5"])
def test_history_limit_out_of_bounds_is_422_naming_it(client, limit):
    resp = client.get(f"/v1/model/history?limit={limit}", headers=ADMIN)
    assert resp.status_code == 422
    assert list(resp.get_json()["errors"]["query"]) == ["limit"]
    assert resp.get_json()["message"].startswith("query parameter limit: ")


def test_history_lists_every_move_with_the_records_each_version_served(client, writing):
    state = writing
    assert client.get("/v1/model/history", headers=ADMIN).get_json() == {
        "model_name": "telco-churn",
        "limit": 100,
        "count": 0,
        "moves": [],
    }
    _moves(
        state,
        (None, "3", "promotion", 60),
        ("3", "4", "forced_promotion", 30),
        ("4", "3", "guard_rollback", 20),
    )
    # the tiny model is v3: 2 records now, after the guard's move back to it
    predicted(client)
    assert state.plog.flush(timeout=10)
    body = client.get("/v1/model/history", headers=ADMIN).get_json()
    assert body["count"] == 3 and body["limit"] == 100
    first, forced, guard = body["moves"]
    assert [m["kind"] for m in body["moves"]] == ["promotion", "forced_promotion", "guard_rollback"]
    assert (forced["from_version"], forced["to_version"], forced["by"], forced["reason"]) == (
        "3",
        "4",
        "alice",
        "why 4",
    )
    assert forced["until"] == guard["at"] and guard["until"] is None
    assert (first["records_served"], forced["records_served"], guard["records_served"]) == (0, 0, 2)
    assert guard["records_by_version"] == {"3": 2} and guard["details"] == {"n": 1}
    newest = client.get("/v1/model/history?limit=1", headers=ADMIN).get_json()
    assert [m["kind"] for m in newest["moves"]] == ["guard_rollback"] and newest["limit"] == 1


def test_history_is_503_while_the_database_is_down(client, state, monkeypatch):
    def down(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr("core.store.champion_timeline", down)
    resp = client.get("/v1/model/history", headers=ADMIN)
    assert resp.status_code == 503 and "unavailable" in resp.get_json()["message"]


# --------------------------------------------------------------------------- feedback
FEEDBACK_CASES = {
    "label-two": ({"label": 2}, "label", "Must be 0, 1 or a class value (a string of 1 to 200 characters)."),
    "label-float": (
        {"label": 1.0},
        "label",
        "Must be 0, 1 or a class value (a string of 1 to 200 characters).",
    ),
    "label-empty": (
        {"label": ""},
        "label",
        "Must be 0, 1 or a class value (a string of 1 to 200 characters).",
    ),
    "label-bool": ({"label": True}, "label", "Must be 0, 1 or a class value, not a boolean."),
    "label-not-a-class": (
        {"label": "1"},
        "label",
        "'1' is not a class of this model; one of 0, 1, 'Yes' (1), 'No' (0).",
    ),
    "label-missing": ({"label": "<drop>"}, "label", "Missing data for required field."),
    "request-id-missing": ({"request_id": "<drop>"}, "request_id", "Missing data for required field."),
    "request-id-not-uuid": ({"request_id": "nope"}, "request_id", "Not a valid UUID."),
    "record-index-negative": (
        {"record_index": -1},
        "record_index",
        "Must be greater than or equal to 0 and less than or equal to 1000000.",
    ),
    "record-index-too-large": (
        {"record_index": 1_000_001},
        "record_index",
        "Must be greater than or equal to 0 and less than or equal to 1000000.",
    ),
    "record-index-string": ({"record_index": "x"}, "record_index", "Not a valid integer."),
    "unknown-field": ({"x": 1}, "x", "Unknown field."),
}


@pytest.mark.parametrize(("change", "field", "error"), FEEDBACK_CASES.values(), ids=FEEDBACK_CASES.keys())
def test_invalid_feedback_is_422(client, change, field, error):
    payload = {"request_id": str(uuid.uuid4()), "label": 1, **change}
    payload = {k: v for k, v in payload.items() if v != "<drop>"}
    before = counter(m.FEEDBACK, "invalid")
    resp = post(client, "/v1/feedback", payload)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["message"] == f"{field}: {error}" and body["errors"] == {"json": {field: [error]}}
    assert counter(m.FEEDBACK, "invalid") == before + 1


def test_feedback_takes_the_data_sets_own_class_values(client, writing):
    """A data set's own label values ("Yes"/"No" for Telco, "good"/"bad" for a credit one), as the
    served model's metadata names them, are stored as 1/0."""
    rid = predicted(client)
    for index, label in ((0, "Yes"), (1, "No")):
        resp = post(client, "/v1/feedback", {"request_id": rid, "record_index": index, "label": label})
        assert resp.status_code == 201, resp.get_json()
        assert resp.get_json()["label"] == {"Yes": 1, "No": 0}[label]
    with writing.plog.engine.connect() as conn:
        rows = conn.execute(
            select(feedback.c.record_index, feedback.c.label).where(feedback.c.request_id == rid)
        ).all()
    assert sorted(rows) == [(0, 1), (1, 0)]


def test_feedback_body_not_an_object_is_422(client):
    resp = post(client, "/v1/feedback", [1])
    assert resp.status_code == 422
    assert resp.get_json()["errors"]["json"] == {
        "_": ["Unknown field."],
        "label": ["Missing data for required field."],
        "request_id": ["Missing data for required field."],
    }


@pytest.fixture
def writing(state):
    """The prediction log's spool thread running (the feedback finds predictions in the spool itself)."""
    state.plog.start()
    return state


def test_feedback_stores_the_label_once(client, writing):
    rid = predicted(client)  # only in the spool: the feedback inserts it from there
    before = counter(m.FEEDBACK, "stored")
    resp = post(client, "/v1/feedback", {"request_id": rid, "record_index": 1, "label": 1})
    assert resp.status_code == 201
    body = resp.get_json()
    assert {k: body[k] for k in ("request_id", "record_index", "label")} == {
        "request_id": rid,
        "record_index": 1,
        "label": 1,
    }
    received = datetime.fromisoformat(body["received_at"])
    assert received.tzinfo is not None
    assert counter(m.FEEDBACK, "stored") == before + 1
    with writing.plog.engine.connect() as conn:
        rows = conn.execute(
            select(feedback.c.record_index, feedback.c.label).where(feedback.c.request_id == rid)
        ).all()
    assert rows == [(1, 1)]

    dup = post(client, "/v1/feedback", {"request_id": rid, "record_index": 1, "label": 0})
    assert dup.status_code == 409
    assert dup.get_json()["message"] == f"record 1 of request {rid} already has a label"
    assert (
        post(client, "/v1/feedback", {"request_id": rid, "label": 0}).status_code == 201
    )  # index 0 (default)


@pytest.mark.parametrize("case", ["unknown-request", "unknown-record-index"])
def test_feedback_for_no_prediction_is_404(client, writing, case):
    rid, index = (str(uuid.uuid4()), 0) if case == "unknown-request" else (predicted(client), 7)
    before = counter(m.FEEDBACK, "not_found")
    resp = post(client, "/v1/feedback", {"request_id": rid, "record_index": index, "label": 1})
    assert resp.status_code == 404
    assert resp.get_json()["message"] == f"no prediction with request_id {rid} and record_index {index}"
    assert counter(m.FEEDBACK, "not_found") == before + 1


def _database_down(*_a, **_k):
    raise OperationalError("SELECT 1", {}, Exception("connection refused"))


@pytest.mark.parametrize("where", ["lookup", "insert"])
def test_feedback_while_the_database_is_down_is_503(client, writing, monkeypatch, where):
    rid = predicted(client)
    assert writing.plog.flush(10)
    method = "prediction_exists" if where == "lookup" else "insert_feedback"
    monkeypatch.setattr(writing.plog.store, method, _database_down)
    before = counter(m.FEEDBACK, "unavailable")
    resp = post(client, "/v1/feedback", {"request_id": rid, "label": 1})
    assert resp.status_code == 503
    assert resp.get_json()["message"] == "the prediction log database is unavailable; retry later"
    assert resp.headers["Retry-After"] == "5"
    assert counter(m.FEEDBACK, "unavailable") == before + 1


def test_a_bug_in_feedback_is_a_500_not_a_503(client, writing, monkeypatch):
    """Only database errors mean 'unavailable'; anything else is a bug and answers 500."""

    def bug(*_a, **_k):
        raise KeyError("a bug")

    monkeypatch.setattr(writing.plog.store, "prediction_exists", bug)
    before = counter(m.FEEDBACK, "unavailable")
    resp = post(client, "/v1/feedback", {"request_id": str(uuid.uuid4()), "label": 1})
    assert resp.status_code == 500
    assert counter(m.FEEDBACK, "unavailable") == before


def test_feedback_finds_a_prediction_only_another_workers_spool_holds(client, writing, tmp_path):
    """Another worker accepted the record (it is in that worker's spool segment, not yet in the database):
    the feedback inserts it from the segment at once and stores the label."""
    other = PredictionLog(writing.plog.url, tmp_path / "spool")  # a second worker, writer not running
    rid = new_request_id()
    other.submit(
        rid,
        datetime.now().astimezone(),
        "telco-churn",
        "3",
        [RECORD] * 2,
        np.array([0.4, 0.6]),
        np.array([0, 1]),
        1.0,
    )
    resp = post(client, "/v1/feedback", {"request_id": rid, "record_index": 1, "label": 1})
    assert resp.status_code == 201, resp.text
    assert writing.plog.store.prediction_exists(rid, 1) and not writing.plog.store.prediction_exists(rid, 0)
    other.close(timeout=5)


def test_feedback_finds_a_prediction_the_writer_moved_between_its_looks(client, writing, monkeypatch):
    """The race CI met: the first database look misses, then the writer process commits the segment and
    deletes it before the spool scan. The record is in the database by then: 201, not 404."""
    rid = predicted(client)
    writing.plog.spool.retire_current()  # closed: the writer's to move
    lookup = writing.plog.store.prediction_exists
    looks: list[bool] = []

    def first_look_then_the_writer_moves(request_id, record_index):
        found = lookup(request_id, record_index)
        if not looks:
            assert not found  # still only in the spool
            assert writing.plog.flush(10)  # the writer: commit, then unlink
            assert writing.plog.spool.find(rid, 1) is None
        looks.append(found)
        return found

    monkeypatch.setattr(writing.plog.store, "prediction_exists", first_look_then_the_writer_moves)
    resp = post(client, "/v1/feedback", {"request_id": rid, "record_index": 1, "label": 1})
    assert resp.status_code == 201, resp.text
    assert looks == [False, True]


def test_feedback_for_an_unknown_recent_id_is_404_at_once(client, writing, monkeypatch):
    """A made-up UUIDv7 with the current time is answered without waiting (no polling, no sleep)."""

    def no_sleep(_s):
        raise AssertionError("feedback must not wait")

    monkeypatch.setattr("time.sleep", no_sleep)
    resp = post(client, "/v1/feedback", {"request_id": new_request_id(), "label": 1})
    assert resp.status_code == 404


# --------------------------------------------------------------------------- the OpenAPI document
def test_openapi_fills_in_this_apps_limits_and_the_models_record(client):
    spec = client.get("/openapi.json").get_json()
    for path in ("/v1/predict", "/v1/explain"):
        assert spec["paths"][path]["post"]["requestBody"]["description"] == f"1 to {MAX_BATCH} records"
    assert (
        spec["paths"]["/v1/feedback"]["post"]["requestBody"]["description"]
        == "request id, record index, true label"
    )
    record = spec["components"]["schemas"]["PredictRecord"]
    assert record["description"].startswith("one record for telco-churn v3")
    assert set(record["properties"]) == set(RECORD)
    assert spec["paths"]["/metrics"]["get"]["tags"] == ["ops"]
    assert [t["name"] for t in spec["tags"]] == ["v1", "admin", "ops"]
    assert list(spec["paths"]) == [
        "/v1/predict",
        "/v1/explain",
        "/v1/model",
        "/v1/model/history",
        "/v1/feedback",
        "/v1/admin/reload",
        "/health",
        "/ready",
        "/metrics",
    ]


def test_openapi_without_a_model_has_an_empty_record(make_app):
    spec = make_app().test_client().get("/openapi.json").get_json()
    assert spec["components"]["schemas"]["PredictRecord"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    items = spec["components"]["schemas"]["PredictRequest"]["properties"]["records"]["items"]
    assert items == {"$ref": "#/components/schemas/PredictRecord"}


def test_endpoint_names_label_the_request_metrics(app):
    """The dashboards and alerts select flask_http_request_duration_seconds{endpoint="v1.predict"}."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert {"v1.predict", "v1.explain", "v1.model_info", "v1.post_feedback", "admin.reload"} <= endpoints
    assert "v1.model_history" in endpoints
    assert {"ops.health", "ops.ready"} <= endpoints


# --------------------------------------------------------------------------- hardened edges
def _series(client) -> set[str]:
    return {
        line.rsplit(" ", 1)[0]
        for line in client.get("/metrics").text.splitlines()
        if not line.startswith("#")
    }


@pytest.mark.parametrize("path", ["/health", "/v1/predict", "/no/such/path"])
def test_made_up_methods_and_paths_do_not_grow_the_metrics(client, path):
    """200 distinct made-up methods (and paths) add no series beyond the first: method `other`,
    endpoint `unmatched`."""
    client.open(path, method="MFIRST")
    client.open("/made-up-x", method="MSECOND")
    before = _series(client)
    for i in range(200):
        resp = client.open(f"{path}" if i % 2 else f"/made-up-{i}", method=f"M{i}")
        assert resp.status_code in (404, 405)
    after = _series(client)
    assert after == before, sorted(after - before)[:5]
    assert any('method="other"' in s for s in after) and any('endpoint="unmatched"' in s for s in after)


def test_a_405_still_answers_for_the_method_sent(client):
    resp = client.open("/health", method="BREW")
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET, HEAD, OPTIONS"


NOT_JSON = {
    "form": ("application/x-www-form-urlencoded", "records=1"),
    "xml": ("application/xml", "<records/>"),
    "text": ("text/plain", json.dumps({"records": [RECORD]})),
    "none": (None, json.dumps({"records": [RECORD]})),
}


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize(("ctype", "data"), NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_body_that_is_not_declared_json_is_415(client, path, ctype, data):
    headers = {**KEY, **({"Content-Type": ctype} if ctype else {})}
    resp = client.post(path, data=data, headers=headers)
    assert resp.status_code == 415
    assert resp.get_json()["message"] == f"Content-Type must be application/json (got {ctype or 'none'})"


def test_json_with_a_charset_or_a_json_suffix_is_accepted(client):
    for ctype in ("application/json; charset=utf-8", "application/vnd.churn+json"):
        resp = client.post(
            "/v1/predict", data=json.dumps({"records": [RECORD]}), headers={**KEY, "Content-Type": ctype}
        )
        assert resp.status_code == 200, ctype


DUPLICATES = {
    "top-level": ('{"records": [], "records": [%s]}', "records"),
    "in-a-record": ('{"records": [{"tenure": 1, "tenure": 2, %s}]}', "tenure"),
    "spaced": ('{"records" : [{"gender" : "Male", "gender":"Female", %s}]}', "gender"),
    "colon-in-a-value": ('{"records": [%s], "note": "a:b", "note": 1}', "note"),
}


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
@pytest.mark.parametrize(("template", "key"), DUPLICATES.values(), ids=DUPLICATES.keys())
def test_a_repeated_json_key_is_400(client, path, template, key):
    record = json.dumps(RECORD)
    resp = post(
        client, path, data=template % (record[1:-1] if "{" in template.split("[", 1)[1][:2] else record)
    )
    assert resp.status_code == 400
    assert resp.get_json()["message"] == f"malformed JSON: duplicate key '{key}' in a JSON object"


def test_a_repeated_feedback_key_is_400(client):
    rid = str(uuid.uuid4())
    resp = post(client, "/v1/feedback", data=f'{{"request_id": "{rid}", "label": 0, "label": 1}}')
    assert resp.status_code == 400 and "duplicate key 'label'" in resp.get_json()["message"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong-token-0123456789"}, 403)],
    ids=["no-token", "wrong-token"],
)
def test_admin_checks_credentials_before_the_query(client, headers, status):
    resp = client.post("/v1/admin/reload?force=maybe", headers=headers)
    assert resp.status_code == status


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/health", {}),
        ("GET", "/ready", {}),
        ("POST", "/v1/predict", JSON),
        ("GET", "/v1/model", {}),
        ("GET", "/nothing", {}),
        ("GET", "/openapi.json", {}),
    ],
)
def test_security_headers_on_api_answers(client, method, path, headers):
    resp = client.open(path, method=method, headers=headers, data=json.dumps({"records": [RECORD]}))
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert resp.headers["Cache-Control"] == "no-store"


def test_swagger_ui_gets_a_policy_that_lets_it_run(client):
    page = client.get("/docs")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    # what the page loads is same-origin (the policy allows nothing else)
    text = page.get_data(as_text=True)
    assert "https://" not in text.replace("https://swagger.io", "")
    asset = client.get("/docs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and asset.headers["Cache-Control"] == "public, max-age=3600"


def test_ensure_sync_answers_as_flask_does_and_remembers_plain_functions(app):
    from flask import Flask

    def view():
        return "plain"

    async def coroutine():
        return "async"

    assert app.ensure_sync(view) is view and app.ensure_sync(view) is view and view in app._sync
    try:
        Flask.ensure_sync(app, coroutine)
    except RuntimeError:  # Flask's async support needs asgiref: the same error either way
        with pytest.raises(RuntimeError):
            app.ensure_sync(coroutine)
    else:
        assert app.ensure_sync(coroutine) is not coroutine and app.ensure_sync(coroutine)() == "async"


# --------------------------------------------------------------------------- event time (business time)
def _stored_times(state, rid: str) -> list[tuple[datetime, datetime | None]]:
    """(created_at, event_at) of a request's logged records, by record index, once the writer moved them."""
    from core.store import as_utc, predictions

    assert state.plog.flush(10)
    p = predictions
    with state.plog.engine.connect() as conn:
        rows = conn.execute(
            select(p.c.created_at, p.c.event_at).where(p.c.request_id == rid).order_by(p.c.record_index)
        ).all()
    return [(as_utc(c), as_utc(e)) for c, e in rows]


def test_predict_stores_the_requests_event_time_on_every_record(client, writing):
    body = {"records": [RECORD, RECORD], "event_time": "2026-09-01T08:30:00+02:00"}
    resp = post(client, "/v1/predict", body)
    assert resp.status_code == 200, resp.text
    stored = _stored_times(writing, resp.get_json()["request_id"])
    assert [e for _, e in stored] == [datetime(2026, 9, 1, 6, 30, tzinfo=UTC)] * 2  # in UTC
    assert all(c > e for c, e in stored)  # created_at stays the processing time


def test_predict_without_an_event_time_stores_the_time_it_was_received(client, writing):
    rid = predicted(client)
    stored = _stored_times(writing, rid)
    assert len(stored) == 2 and all(c is not None and e == c for c, e in stored)


def _in(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


EVENT_TIME_CASES = {
    "number": (1764579000, "must be a string"),
    "null": (None, "must be a string"),
    "not-a-date": ("yesterday", "is not an RFC 3339 date-time"),
    "impossible-date": ("2026-02-30T00:00:00Z", "is not an RFC 3339 date-time"),
    "too-long": ("2026-09-01T08:30:00Z" + " " * 60, "is not an RFC 3339 date-time"),
    "no-offset": ("2026-09-01T08:30:00", "needs a UTC offset, e.g. Z"),
    "date-only": ("2026-09-01", "needs a UTC offset, e.g. Z"),
    "out-of-range": ("0001-01-01T00:00:00+01:00", "is out of range"),
    "future": ("<in 2 days>", "is in the future"),
}


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
@pytest.mark.parametrize(("value", "error"), EVENT_TIME_CASES.values(), ids=EVENT_TIME_CASES.keys())
def test_a_bad_event_time_is_422_and_nothing_is_logged(client, state, path, value, error):
    value = _in(2) if value == "<in 2 days>" else value
    before = counter(m.VALIDATION_ERRORS, "shape", "")
    resp = post(client, path, {"records": [RECORD], "event_time": value})
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["message"].startswith("event_time: ") and error in body["message"]
    assert list(body["errors"]) == ["json"] and list(body["errors"]["json"]) == ["event_time"]
    assert error in body["errors"]["json"]["event_time"][0]
    assert counter(m.VALIDATION_ERRORS, "shape", "") == before + 1
    assert state.plog.queued() == 0


def test_an_event_time_up_to_a_day_ahead_and_on_explain_is_accepted(client, state):
    assert post(client, "/v1/predict", {"records": [RECORD], "event_time": _in(0.9)}).status_code == 200
    resp = post(client, "/v1/explain", {"records": [RECORD], "event_time": "2026-09-01T08:30:00Z"})
    assert resp.status_code == 200, resp.text
    assert state.plog.queued() == 1  # the prediction only: explain logs nothing


def test_the_openapi_document_describes_event_time(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    for name in ("PredictRequest", "FeedbackRequest"):
        prop = schemas[name]["properties"]["event_time"]
        assert (
            prop["type"] == "string" and prop["format"] == "date-time" and "UTC offset" in prop["description"]
        )
        assert "event_time" not in schemas[name].get("required", [])
    assert "event_time" in schemas["FeedbackResponse"]["properties"]


def _feedback_rows(state, rid: str) -> list[tuple]:
    from core.store import as_utc

    with state.plog.engine.connect() as conn:
        rows = conn.execute(
            select(feedback.c.record_index, feedback.c.received_at, feedback.c.event_at).where(
                feedback.c.request_id == rid
            )
        ).all()
    return [(i, as_utc(r), as_utc(e)) for i, r, e in rows]


def test_feedback_stores_its_event_time_and_defaults_to_when_it_was_received(client, writing):
    rid = post(
        client, "/v1/predict", {"records": [RECORD, RECORD], "event_time": "2026-09-01T00:00:00Z"}
    ).get_json()["request_id"]
    resp = post(
        client,
        "/v1/feedback",
        {"request_id": rid, "record_index": 0, "label": 1, "event_time": "2026-10-01T12:00:00-04:00"},
    )
    assert resp.status_code == 201, resp.text
    known = datetime(2026, 10, 1, 16, 0, tzinfo=UTC)
    assert datetime.fromisoformat(resp.get_json()["event_time"]) == known
    resp = post(client, "/v1/feedback", {"request_id": rid, "record_index": 1, "label": 0})
    assert resp.status_code == 201, resp.text
    body = resp.get_json()
    assert body["event_time"] == body["received_at"]
    rows = sorted(_feedback_rows(writing, rid))
    assert rows[0][2] == known and rows[0][1] > known
    assert rows[1][2] == rows[1][1] == datetime.fromisoformat(body["received_at"])


@pytest.mark.parametrize("where", ["database", "spool"])
def test_feedback_before_its_records_event_time_is_422_and_nothing_stored(client, writing, where):
    rid = post(client, "/v1/predict", {"records": [RECORD], "event_time": "2026-09-01T12:00:00Z"}).get_json()[
        "request_id"
    ]
    if where == "database":
        assert writing.plog.flush(10)
    before = counter(m.FEEDBACK, "invalid")
    early = {"request_id": rid, "label": 1, "event_time": "2026-09-01T11:59:59Z"}
    resp = post(client, "/v1/feedback", early)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["message"].startswith("event_time: before the record's event time (")
    assert body["errors"]["json"]["event_time"][0].startswith("before the record's event time (")
    assert counter(m.FEEDBACK, "invalid") == before + 1
    assert _feedback_rows(writing, rid) == []
    same = post(client, "/v1/feedback", {**early, "event_time": "2026-09-01T14:00:00+02:00"})
    assert same.status_code == 201, same.text  # the record's own event time is not before it


@pytest.mark.parametrize(("value", "error"), EVENT_TIME_CASES.values(), ids=EVENT_TIME_CASES.keys())
def test_a_bad_feedback_event_time_is_422_and_nothing_stored(client, writing, value, error):
    rid = predicted(client)
    value = _in(2) if value == "<in 2 days>" else value
    before = counter(m.FEEDBACK, "invalid")
    resp = post(client, "/v1/feedback", {"request_id": rid, "label": 1, "event_time": value})
    assert resp.status_code == 422
    body = resp.get_json()
    if value is None:  # the schema's own null check
        error = "Field may not be null."
    assert body["message"].startswith("event_time: ") and error in body["message"]
    assert list(body["errors"]["json"]) == ["event_time"] and error in body["errors"]["json"]["event_time"][0]
    assert counter(m.FEEDBACK, "invalid") == before + 1
    assert _feedback_rows(writing, rid) == []
