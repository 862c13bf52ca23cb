"""Realistic request payloads: records of the held-out test split, never seen by training.

Where they come from, first that works:
1. LOAD_TEST_DATA: a parquet file of feature records (e.g. a copy of a run's data/test.parquet);
2. the MLflow registry: the test split logged with the champion's run (artifact data/test.parquet);
3. the data set itself, split by the training code (same stable hash split, so the same rows).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd

TEST_ARTIFACT = "data/test.parquet"


def _from_mlflow(model_name: str) -> pd.DataFrame | None:
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    try:
        import mlflow
        from mlflow import MlflowClient

        version = MlflowClient().get_model_version_by_alias(model_name, "champion")
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=TEST_ARTIFACT, dst_path=tmp
            )
            return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the data set
        print(
            f"payloads: no test split from MLflow ({type(exc).__name__}: {exc}); deriving it from the data set"
        )
        return None


def _from_dataset() -> pd.DataFrame:
    from core.dataset import load_config
    from training.data import read_source
    from training.settings import TrainingSettings
    from training.train import split_data

    config = load_config(TrainingSettings.from_env().dataset_config)
    splits = split_data(read_source(config), config)
    return splits.X["test"]


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def held_out_records(model_name: str | None = None) -> list[dict]:
    """The held-out records as JSON-ready dicts (features only; label and score columns dropped)."""
    model_name = model_name or os.environ.get("MODEL_NAME", "telco-churn")
    if os.environ.get("LOAD_TEST_DATA"):
        frame = pd.read_parquet(Path(os.environ["LOAD_TEST_DATA"]))
    else:
        frame = _from_mlflow(model_name)
        if frame is None:
            frame = _from_dataset()
    frame = frame.drop(columns=[c for c in ("label", "score") if c in frame.columns])
    return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
