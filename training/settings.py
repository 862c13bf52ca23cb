"""Settings of training, the gate and retraining (docs/settings.md is generated from this class)."""

from __future__ import annotations

from typing import ClassVar

from core.settings import RepoPath, Settings, env_field, git_commit


class TrainingSettings(Settings):
    """Training, evaluation, the gate and retraining."""

    state_paths: ClassVar[dict[str, str]] = {
        "data_dir": "data",
        "reports_dir": "reports",
        "artifact_root": "mlflow/artifacts",
    }

    data_dir: RepoPath | None = env_field(
        "DATA_DIR",
        None,
        "snapshots (parquet + manifest) live here; the monitor reads the champion's data here",
    )
    reports_dir: RepoPath | None = env_field("REPORTS_DIR", None, "validation and gate reports")
    artifact_root: RepoPath | None = env_field(
        "MLFLOW_ARTIFACT_ROOT", None, "artifact folder of a local (non-HTTP) tracking store"
    )
    experiment: str = env_field("MLFLOW_EXPERIMENT", "churn", "MLflow experiment name", min_length=1)
    optuna_trials: int = env_field("OPTUNA_TRIALS", 15, "XGBoost tuning trials (Optuna)", ge=1)
    cv_folds: int = env_field("CV_FOLDS", 3, "folds of the tuning cross-validation", ge=2)
    seed: int = env_field("SEED", 42, "every random choice derives from it")
    threads: int = env_field("TRAIN_THREADS", 2, "XGBoost threads", ge=1)
    git_commit_env: str | None = env_field(
        "GIT_COMMIT", None, "code version tagged on runs (images set it; else `git rev-parse HEAD`)"
    )
    model_card: RepoPath | None = env_field(
        "MODEL_CARD",
        None,
        "file `make model-card` writes; unset: docs/model_card.md for the built-in data set, "
        "docs/model_cards/<data set>.md for any other",
    )
    retrain_reason: str = env_field(
        ("RETRAIN_REASON", "REASON"),
        "manual retrain",
        "why a retrain runs (the trigger sets it; Jenkins passes REASON)",
    )
    retrain_trigger_kinds: str = env_field(
        ("RETRAIN_TRIGGER_KINDS", "TRIGGER_KINDS"),
        "manual",
        "what started a retrain: drift, quality, new data, manual (the trigger sets it; Jenkins: TRIGGER_KINDS)",
    )
    retrain_trigger_source: str = env_field(
        ("RETRAIN_TRIGGER_SOURCE", "TRIGGER_SOURCE"),
        "manual",
        "who started a retrain: monitor, schedule, alertmanager, manual (tagged when no kinds are given)",
    )
    retrain_new_labels: str = env_field(
        ("RETRAIN_NEW_LABELS", "NEW_LABELS"),
        "",
        "labelled records since the champion was trained, when new data triggered (Jenkins: NEW_LABELS)",
    )
    retrain_monitoring_run_id: str = env_field(
        ("RETRAIN_MONITORING_RUN_ID", "MONITORING_RUN_ID"),
        "",
        "the monitoring run that triggered a retrain (Jenkins: MONITORING_RUN_ID)",
    )

    @property
    def git_commit(self) -> str:
        return git_commit(self.git_commit_env)
