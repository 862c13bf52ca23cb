"""training/tracking.py: a candidate's nested run lands in its parent's experiment, not in MLflow's
default one."""

from __future__ import annotations

import mlflow

from training import tracking


def test_nested_runs_land_in_the_parents_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        experiment_id = client.create_experiment("churn", artifact_location=str(tmp_path / "artifacts"))
        with mlflow.start_run(experiment_id=experiment_id, run_name="train-x") as parent:
            with tracking.candidate_run("baseline-logreg", {"t": "1"}, params={"C": 1.0}):
                pass
            with tracking.candidate_run("xgboost-tuned", {"t": "1"}, metrics={"cv": 0.5}):
                pass
        everywhere = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(everywhere)
        assert len(runs) == 3
        outside = [r.info.run_name for r in runs if r.info.experiment_id != experiment_id]
        assert outside == []
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert {r.info.run_name for r in children} == {"baseline-logreg", "xgboost-tuned"}
    finally:
        mlflow.set_tracking_uri(None)
