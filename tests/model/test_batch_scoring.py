"""`python -m scoring` (make score) with the trained champion: the scores equal the service's fast path
on the held-out split (1e-6), rejects carry reasons, the run is in MLflow, a wrong column set exits 2
before any work, and the monitor sample lands where the monitor reads."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core import registry, store
from core.feature_schema import CATEGORICAL, field_specs
from model_service.served_model import build_loaded_model
from scoring.__main__ import main

COLUMNS = ["customer_id", "probability", "label", "model_name", "model_version"]


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]


@pytest.fixture
def table(served, tmp_path):
    """The held-out split as a customer table (ids, features) and the service fast path's scores."""
    pipe, meta, test = served
    specs = field_specs(meta["feature_schema"])
    features = test[[s.name for s in specs]].reset_index(drop=True)
    loaded = build_loaded_model("telco-churn", "1", "champion", pipe, meta)
    expected = loaded.predict(loaded.validator.validate(_records(features)))
    frame = features.copy()
    frame.insert(0, "customer_id", [f"cust-{i:05d}" for i in range(len(frame))])
    return frame, expected, loaded, specs


def test_scores_equal_the_service_fast_path_and_the_run_is_logged(champion_env, table, tmp_path, capsys):
    frame, expected, loaded, _ = table
    frame.to_parquet(tmp_path / "customers.parquet")
    out = tmp_path / "scores.parquet"
    assert main(["--input", str(tmp_path / "customers.parquet"), "--output", str(out)]) == 0
    scores = pq.read_table(out).to_pandas()
    assert list(scores.columns) == COLUMNS
    assert scores["customer_id"].tolist() == frame["customer_id"].tolist()  # input order
    np.testing.assert_allclose(scores["probability"].to_numpy(), expected, rtol=0, atol=1e-6)
    assert (scores["label"].to_numpy() == loaded.labels(expected)).all()
    assert set(scores["model_version"]) == {champion_env.version}
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(
        f"scored {len(frame):,} rows with {champion_env.model_name} v{champion_env.version}"
    )

    registry.connect(champion_env.env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["batch-scoring"], output_format="list")
    metrics, params = runs[0].data.metrics, runs[0].data.params
    assert metrics["rows_in"] == metrics["rows_out"] == len(frame) and metrics["rows_rejected"] == 0
    assert metrics["seconds"] > 0 and params["model_version"] == champion_env.version
    assert params["engine"] == "local" and params["model_alias"] == "champion"


def test_csv_in_csv_out_with_rejects_and_a_named_version(champion_env, table, tmp_path):
    frame, expected, _, specs = table
    frame = frame.head(500).copy()
    frame.loc[3, "tenure"] = -4
    frame.loc[7, "contract"] = None
    frame.loc[9, "monthly_charges"] = "lots"
    frame.to_csv(tmp_path / "customers.csv", index=False)
    out, rejects = tmp_path / "scores.csv", tmp_path / "bad.csv"
    args = ["--input", str(tmp_path / "customers.csv"), "--output", str(out), "--rejects", str(rejects)]
    assert main([*args, "--model", champion_env.version]) == 0
    scores = pd.read_csv(out, dtype={"model_version": str})
    assert list(scores.columns) == COLUMNS and len(scores) == 497
    kept = np.setdiff1d(np.arange(500), [3, 7, 9])
    np.testing.assert_allclose(scores["probability"].to_numpy(), expected[kept], rtol=0, atol=1e-6)
    bad = pd.read_csv(rejects)
    assert bad["row"].tolist() == [3, 7, 9]
    assert bad["reason"].tolist() == [
        "tenure: below the minimum 0",
        "contract: missing value (the model's schema requires one)",
        "monthly_charges: not a number",
    ]
    assert bad["customer_id"].tolist() == frame["customer_id"].iloc[[3, 7, 9]].tolist()


def test_a_wrong_column_set_exits_2_before_any_work(champion_env, table, tmp_path, capsys):
    frame, *_ = table
    frame.drop(columns=["tenure", "contract"]).to_parquet(tmp_path / "customers.parquet")
    out = tmp_path / "scores.parquet"
    code = main(
        ["--input", str(tmp_path / "customers.parquet"), "--output", str(out), "--keys", "id,customer_id"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the input does not fit the model")
    assert "key column(s) missing: id" in err[0] and "feature column(s) missing: tenure, contract" in err[0]
    assert not out.exists() and not list(tmp_path.glob("*rejects*"))
    # an unknown alias is the same kind of error
    assert (
        main(["--input", str(tmp_path / "customers.parquet"), "--output", str(out), "--model", "nope"]) == 2
    )


def test_a_sample_of_the_batch_goes_where_the_monitor_reads(champion_env, table, tmp_path, monkeypatch):
    frame, _, _, specs = table
    frame.to_parquet(tmp_path / "customers.parquet")
    monkeypatch.setenv("SCORE_MONITOR_SAMPLE", "120")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'loop.db'}")
    assert (
        main(["--input", str(tmp_path / "customers.parquet"), "--output", str(tmp_path / "s.parquet")]) == 0
    )
    engine = store.engine_for(f"sqlite:///{tmp_path / 'loop.db'}")
    window = store.recent_predictions(engine, champion_env.model_name, champion_env.version, 500, 0)
    assert len(window) == 120
    assert window["request_id"].str.startswith("batch-").all() and window["request_id"].nunique() == 1
    scores = pq.read_table(tmp_path / "s.parquet").to_pandas()
    rows = window["record_index"].to_numpy()
    np.testing.assert_allclose(window["score"].to_numpy(), scores["probability"].to_numpy()[rows], atol=1e-12)
    for spec in specs:  # the features as the service logs them: strings or numbers, per the schema
        values = window[spec.name].dropna()
        if spec.type == CATEGORICAL:
            assert all(isinstance(v, str) for v in values)
        else:
            assert pd.api.types.is_numeric_dtype(values)
