"""POST /v1/explain under its real server (granian, 2 workers): the explained-records metric adds up across workers.

The endpoint's contract (auth, validation, shapes) is tested in process on a small model
(tests/unit/test_service_http.py) and with the trained champion (tests/unit/test_service_explain.py).
"""

from __future__ import annotations

import pytest
import requests

from tests.support.service_process import API_KEY, RECORD, Service, private_store, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(trained_champion, tmp_path_factory):
    store = private_store(trained_champion.env, tmp_path_factory.mktemp("explain-store"))
    root = tmp_path_factory.mktemp("explain-svc")
    svc = Service(root, service_env(store, root, MAX_BATCH_SIZE="50"))
    svc.start()
    yield svc
    svc.cleanup()


def explain(svc: Service, records) -> requests.Response:
    return requests.post(
        svc.url + "/v1/explain", json={"records": records}, headers={"X-API-Key": API_KEY}, timeout=30
    )


def test_explained_records_are_counted_across_workers(service: Service):
    before = service.metric("model_service_explained_records_total")
    for _ in range(10):  # spread over both workers
        resp = explain(service, [RECORD] * 3)
        assert resp.status_code == 200, resp.text
    assert service.metric("model_service_explained_records_total") == before + 30
