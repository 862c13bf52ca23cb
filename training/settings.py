"""Settings of the training component, read from environment variables (documented defaults).

This is the one place where the training, gate and registry code reads its environment. Switching
from the embedded default to the on-prem stack is only a change of these variables.

| variable               | default                              | meaning                                   |
|------------------------|--------------------------------------|-------------------------------------------|
| DATASET_CONFIG         | config/telco_churn.yaml              | the data set's config file                |
| DATA_DIR               | var/data                             | snapshots (parquet + manifest) live here  |
| REPORTS_DIR            | var/reports                          | validation and gate reports               |
| MLFLOW_TRACKING_URI    | sqlite:///var/mlflow/mlflow.db       | MLflow tracking + registry store          |
| MLFLOW_ARTIFACT_ROOT   | var/mlflow/artifacts                 | artifact folder (non-HTTP tracking URIs)  |
| MLFLOW_EXPERIMENT      | churn                                | experiment name                           |
| MODEL_NAME             | telco-churn                          | registered model name                     |
| OPTUNA_TRIALS          | 15                                   | XGBoost tuning trials                     |
| CV_FOLDS               | 3                                    | folds of the tuning cross-validation      |
| SEED                   | 42                                   | every random choice derives from it       |
| TRAIN_THREADS          | 2                                    | XGBoost threads                           |
| GIT_COMMIT             | `git rev-parse HEAD`                 | code version tagged on runs (images set it)|
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO_ROOT / path


def _git_commit() -> str:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _default_tracking_uri() -> str:
    return f"sqlite:///{_path('var/mlflow/mlflow.db')}"


@dataclass(frozen=True)
class TrainingSettings:
    dataset_config: Path
    data_dir: Path
    reports_dir: Path
    tracking_uri: str
    artifact_root: Path
    experiment: str
    model_name: str
    optuna_trials: int
    cv_folds: int
    seed: int
    threads: int

    @classmethod
    def from_env(cls) -> TrainingSettings:
        env = os.environ.get
        return cls(
            dataset_config=_path(env("DATASET_CONFIG", "config/telco_churn.yaml")),
            data_dir=_path(env("DATA_DIR", "var/data")),
            reports_dir=_path(env("REPORTS_DIR", "var/reports")),
            tracking_uri=env("MLFLOW_TRACKING_URI") or _default_tracking_uri(),
            artifact_root=_path(env("MLFLOW_ARTIFACT_ROOT", "var/mlflow/artifacts")),
            experiment=env("MLFLOW_EXPERIMENT", "churn"),
            model_name=env("MODEL_NAME", "telco-churn"),
            optuna_trials=int(env("OPTUNA_TRIALS", "15")),
            cv_folds=int(env("CV_FOLDS", "3")),
            seed=int(env("SEED", "42")),
            threads=int(env("TRAIN_THREADS", "2")),
        )

    @property
    def git_commit(self) -> str:
        return _git_commit()
