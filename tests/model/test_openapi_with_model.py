"""The service's routes do not depend on the model it serves.

tests/unit/test_docs.py checks docs/api.md against the OpenAPI spec of an app built without a model
(fast); here the same factory serves the session's trained champion (tests/conftest.py), and the spec
must list the same endpoints, now with the record schema derived from the model's features.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_docs import openapi_endpoints, service_openapi


def test_champion_adds_no_route(champion_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with_model = service_openapi({"SPOOL_DIR": str(tmp_path / "spool")}, monkeypatch)
    assert "tenure" in with_model["components"]["schemas"]["PredictRecord"]["properties"]
    monkeypatch.undo()
    without = service_openapi(
        {
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
            "SPOOL_DIR": str(tmp_path / "spool-empty"),
        },
        monkeypatch,
    )
    assert openapi_endpoints(with_model) == openapi_endpoints(without)
