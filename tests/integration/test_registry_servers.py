"""train -> register -> gate -> alias against real servers: an `mlflow server` process on SQLite with
local proxied artifacts, and one on PostgreSQL with artifacts in an S3-compatible store (moto)."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from core import registry
from tests.conftest import FAST_TRAINING, start_mlflow_server, stop_process
from training import gate, train
from training.settings import TrainingSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _round_trip(monkeypatch, tmp_path, tracking_url: str) -> None:
    for key, value in {
        **FAST_TRAINING,
        "MLFLOW_TRACKING_URI": tracking_url,
        "DATA_DIR": str(tmp_path / "data"),
        "REPORTS_DIR": str(tmp_path / "reports"),
        "MLFLOW_EXPERIMENT": "it",
    }.items():
        monkeypatch.setenv(key, value)
    settings = TrainingSettings.from_env()
    first = train.train(settings)
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(settings.model_name, "challenger").version == first.version
    assert gate.main([]) == 0
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert champion.version == first.version
    assert champion.tags["data_hash"] == first.data_hash
    assert champion.tags["git_commit"]

    # a second model is judged against the first on the same test set, then promoted
    second = train.train(TrainingSettings.from_env())
    assert int(second.version) == int(first.version) + 1
    assert gate.main([]) == 0
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == second.version
    assert registry.previous_champion(settings.model_name) == first.version

    # the served artifact loads from the server without the training code and scores raw features
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
    test = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=second.run_id, artifact_path="data/test.parquet")
    )
    scores = model.predict(test.drop(columns="label").head(5))
    assert scores.shape == (5, 2)


def test_round_trip_on_mlflow_server_with_sqlite(tmp_path, monkeypatch):
    server = start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"), tmp_path)
    try:
        _round_trip(monkeypatch, tmp_path, server.url)
        assert any((tmp_path / "artifacts").rglob("model.pkl")), "artifacts must land in the server's folder"
    finally:
        stop_process(server.process)


def test_round_trip_on_postgres_and_s3(tmp_path, monkeypatch, postgres_server, s3_server):
    backend = postgres_server.create_database("mlflow_it")
    s3_server.make_bucket("mlflow")
    server = start_mlflow_server(backend, "s3://mlflow/artifacts", tmp_path, s3_server.env())
    try:
        _round_trip(monkeypatch, tmp_path, server.url)
        versions = postgres_server.psql("SELECT count(*) FROM model_versions", "mlflow_it")
        assert int(versions) == 2
        from minio import Minio

        client = Minio(
            s3_server.endpoint.removeprefix("http://"),
            access_key="testing",
            secret_key="testing",
            secure=False,
            region="us-east-1",
        )
        names = [o.object_name for o in client.list_objects("mlflow", prefix="artifacts/", recursive=True)]
        assert any(n.endswith("model.pkl") for n in names), names[:10]
    finally:
        stop_process(server.process)
