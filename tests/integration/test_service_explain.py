"""POST /v1/explain and the global importance of GET /v1/model under a real gunicorn (2 workers)."""

from __future__ import annotations

import math

import pytest
import requests

from tests.integration.service_process import API_KEY, RECORD, Service, private_store, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(trained_champion, tmp_path_factory):
    store = private_store(trained_champion.env, tmp_path_factory.mktemp("explain-store"))
    root = tmp_path_factory.mktemp("explain-svc")
    svc = Service(root, service_env(store, root, MAX_BATCH_SIZE="50"))
    svc.start()
    yield svc
    svc.cleanup()


def explain(svc: Service, records, key: str = API_KEY, **kw) -> requests.Response:
    headers = {"X-API-Key": key} if key else {}
    return requests.post(
        svc.url + "/v1/explain", json={"records": records}, headers=headers, timeout=30, **kw
    )


def test_explain_auth_and_validation(service: Service):
    missing = explain(service, [RECORD], key="")
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["message"]
    assert explain(service, [RECORD], key="not-the-key-0123456789").status_code == 403
    bad = explain(service, [RECORD, {**RECORD, "monthly_charges": "lots"}])
    assert bad.status_code == 422
    assert "records[1].monthly_charges" in bad.json()["message"]
    assert "monthly_charges" in bad.json()["errors"]["json"]["records"]["1"]
    assert explain(service, [RECORD] * 51).status_code == 413
    malformed = requests.post(
        service.url + "/v1/explain",
        data=b"{not json",
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        timeout=10,
    )
    assert malformed.status_code == 400


def test_explain_contributions_add_up_and_make_sense(service: Service):
    records = [RECORD, {**RECORD, "contract": "Two year", "tenure": 70, "total_charges": None}]
    resp = explain(service, records)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert resp.headers["X-Request-ID"] == body["request_id"]
    assert body["units"] == "log-odds" and body["method"] in ("tree_shap", "linear")
    predicted = service.predict(records).json()["predictions"]
    for exp, pred, rec in zip(body["explanations"], predicted, records, strict=True):
        contribs = exp["contributions"]
        assert [c["feature"] for c in contribs] and {c["feature"] for c in contribs} == set(RECORD)
        assert all(c["value"] == rec.get(c["feature"]) for c in contribs)
        sizes = [abs(c["contribution"]) for c in contribs]
        assert sizes == sorted(sizes, reverse=True)
        total = exp["base_value"] + sum(c["contribution"] for c in contribs)
        assert total == pytest.approx(exp["logit"], abs=1e-5)
        p = exp["probability"]
        assert total == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
        assert p == pytest.approx(pred["probability"], abs=1e-9)
        assert exp["label"] == pred["label"]
    # a month-to-month fibre customer with tenure 1: contract or tenure among the top 3 positive pushes
    positive = [c["feature"] for c in body["explanations"][0]["contributions"] if c["contribution"] > 0]
    assert {"contract", "tenure"} & set(positive[:3]), body["explanations"][0]["contributions"]
    # a two-year contract pulls the other record down
    second = {c["feature"]: c["contribution"] for c in body["explanations"][1]["contributions"]}
    assert second["contract"] < 0
    assert service.metric("model_service_explained_records_total", method=body["method"]) >= 2


def test_model_endpoint_lists_global_importance(service: Service):
    body = requests.get(service.url + "/v1/model", headers={"X-API-Key": API_KEY}, timeout=10).json()
    imp = body["feature_importance"]
    assert {i["feature"] for i in imp} == set(RECORD)
    values = [i["importance"] for i in imp]
    assert values == sorted(values, reverse=True) and sum(values) == pytest.approx(1.0, abs=1e-4)
    assert body["explanation_method"] in ("tree_shap", "linear")


def test_openapi_documents_explain(service: Service):
    spec = requests.get(service.url + "/openapi.json", timeout=10).json()
    op = spec["paths"]["/v1/explain"]["post"]
    assert op["security"] == [{"ApiKeyAuth": []}]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictRequest")
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = spec["components"]["schemas"][ref]
    assert (
        "explanations" in schema["properties"] and "log-odds" in schema["properties"]["units"]["description"]
    )
    for code in ("401", "413", "422"):
        assert code in op["responses"]
    assert requests.get(service.url + "/docs", timeout=10).status_code == 200
