"""The log step: the training run in MLflow and the registered model version.

One parent run per training (`train-<data set>`: parameters, the validation report, the data set's
config, every candidate's held-out metrics, the chosen one's test metrics, the `evaluation/` report),
one nested run per candidate (`baseline-logreg`, `xgboost-tuned` with the tuned parameters and the
cross-validated PR AUC), and in the parent run the chosen model: the held-out test set (the gate scores
it), the drift reference (a sample of the valid split with labels and scores, the monitor compares
production with it) with its calibrated drift bounds (`reference/drift_calibration.json`,
training.drift_calibration), the model with signature, input example and metadata, registered under
MODEL_NAME with the alias `challenger`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from core import registry
from core.dataset import DatasetConfig
from core.drift import CALIBRATION_ARTIFACT, Calibration
from core.features import example_record
from training.candidate import Candidate
from training.data import Splits, TrainingData, lineage_root
from training.drift_calibration import calibrate
from training.evaluate import Report
from training.settings import TrainingSettings

REFERENCE_ROWS = 2000


def run_tags(data: TrainingData, git_commit: str) -> dict[str, str]:
    """Tags of the training run, its nested runs and the model version: code and data lineage."""
    return {
        "git_commit": git_commit,
        "data_hash": data.snapshot.hash,
        "dataset": data.config.name,
        "data_snapshot": data.snapshot.hash[:16],
        # lineage: the snapshot's parent and the source snapshot it descends from (the monitor compares
        # the source's hash now with `source_hash` to see whether the source changed since)
        "data_parent": str(data.snapshot.manifest.get("parent") or ""),
        "source_hash": lineage_root(data.snapshot).hash,
    }


@contextmanager
def training_run(
    experiment_id: str, data: TrainingData, settings: TrainingSettings, tags: dict
) -> Iterator[str]:
    """The parent run (its id), with the training's parameters, validation report and config."""
    config = data.config
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{config.name}", tags=tags) as run:
        mlflow.log_params(
            {
                "dataset": config.name,
                "rows": data.rows,
                "seed": settings.seed,
                "optuna_trials": settings.optuna_trials,
                "cv_folds": settings.cv_folds,
                "fp_cost": config.fp_cost,
                "fn_cost": config.fn_cost,
                **{f"rows_{k}": v for k, v in data.splits.sizes().items()},
            }
        )
        mlflow.log_artifact(str(data.validation_report), "validation")
        mlflow.log_artifact(str(config.path), "config")
        yield run.info.run_id


@contextmanager
def candidate_run(
    run_name: str, tags: dict, params: dict | None = None, metrics: dict | None = None
) -> Iterator[str]:
    """A nested run (its id) for fitting one candidate, with its parameters and tuning score, in its
    parent's experiment (MLflow puts a nested run without an experiment id in the default one)."""
    parent = mlflow.active_run()
    experiment_id = parent.info.experiment_id if parent else None
    with mlflow.start_run(run_name=run_name, nested=True, tags=tags, experiment_id=experiment_id) as run:
        if params:
            mlflow.log_params(params)
        if metrics:
            mlflow.log_metrics(metrics)
        yield run.info.run_id


def log_candidates(candidates: Sequence[Candidate]) -> None:
    """Every candidate's held-out metrics in the parent run, prefixed with its name."""
    for c in candidates:
        held = c.measured
        mlflow.log_metrics(
            {
                f"{c.name}_valid_pr_auc": held.valid_pr_auc,
                f"{c.name}_threshold": held.threshold,
                **{f"{c.name}_test_{k}": v for k, v in held.test.items()},
            }
        )


def log_choice(chosen: Candidate, train_seconds: float) -> None:
    held = chosen.measured
    mlflow.log_params({"model": chosen.name, "threshold": held.threshold})
    mlflow.log_metrics({f"test_{k}": v for k, v in held.test.items()})
    mlflow.log_metric("train_seconds", train_seconds)


def log_evaluation(report: Report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(report.write(Path(tmp))), "evaluation")


def reference_sample(chosen: Candidate, splits: Splits, seed: int) -> pd.DataFrame:
    """The drift reference: valid-split features with label and the chosen model's score, sampled."""
    reference = splits.X["valid"].assign(
        label=splits.y["valid"].to_numpy(), score=chosen.measured.valid_scores
    )
    return reference.sample(min(REFERENCE_ROWS, len(reference)), random_state=seed)


def register(
    chosen: Candidate, report: Report, data: TrainingData, settings: TrainingSettings, tags: dict
) -> str:
    """Inside the training run: log and register the chosen candidate; returns the new version."""
    config, splits, held = data.config, data.splits, chosen.measured
    metadata = {
        "dataset": config.name,
        "target": config.target,
        "positive_class": str(config.positive_class),
        "negative_class": data.negative_class,  # feedback may name either class (POST /v1/feedback)
        "data_hash": data.snapshot.hash,
        "git_commit": tags["git_commit"],
        "algorithm": chosen.name,
        "test_metrics": held.test,
        "feature_importance": report.importance.round(6).to_dict(),
    }
    reference = reference_sample(chosen, splits, settings.seed)
    return log_model_version(
        chosen.pipeline,
        config,
        settings,
        threshold=held.threshold,
        sample=splits.X["train"].head(100),
        test_set=splits.X["test"].assign(label=splits.y["test"].to_numpy()),
        reference=reference,
        tags={**tags, "algorithm": chosen.name},
        metadata=metadata,
        drift_calibration=calibrate(reference, report.importance.to_dict(), config),
    )


def calibration_tag(calibration: Calibration) -> str:
    """The model version's tag: what the calibration promises, where it is (the bounds are the artifact)."""
    policy = calibration.policy
    rates = ", ".join(
        f"{n}: {r['bootstrap_alarm_rate']:.3f}" for n, r in calibration.info.get("rates", {}).items()
    )
    return (
        f"{CALIBRATION_ARTIFACT}: alarm rate <= {policy.false_alarm_rate} (resampled: {rates}), "
        f"top {policy.top_k} {', '.join(calibration.top)}"
    )


def feature_schema(config: DatasetConfig) -> list[dict]:
    return [f.as_dict() for f in config.features]


def _log_frame(frame: pd.DataFrame, artifact_path: str, filename: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path)


def log_model_version(
    pipe: Pipeline,
    config: DatasetConfig,
    settings: TrainingSettings,
    *,
    threshold: float,
    sample: pd.DataFrame,
    test_set: pd.DataFrame,
    reference: pd.DataFrame,
    tags: dict,
    metadata: dict,
    drift_calibration: Calibration | None = None,
) -> str:
    """Inside an active run: log the held-out test set (for the gate), the drift reference, and the model
    with its signature, input example, threshold and feature schema; register it and alias it
    `challenger`. Returns the new version."""
    run = mlflow.active_run()
    _log_frame(test_set, "data", "test.parquet")
    _log_frame(reference, "reference", "reference.parquet")
    if drift_calibration is not None:
        mlflow.log_dict(drift_calibration.as_dict(), CALIBRATION_ARTIFACT)
        tags = {**tags, "drift_calibration": calibration_tag(drift_calibration)}
    signature = infer_signature(sample, pipe.predict_proba(sample))
    metadata = {
        **metadata,
        "threshold": float(threshold),
        "feature_schema": feature_schema(config),
        # the service's Swagger example: the config's example_record, else a reference record
        "example_record": example_record(config, reference),
        "trained_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    }
    info = mlflow.sklearn.log_model(
        pipe,
        name="model",
        serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
        signature=signature,
        input_example=sample.head(3),
        metadata=metadata,
        registered_model_name=settings.model_name,
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in {**tags, "run_id": run.info.run_id, "threshold": f"{threshold:.6f}"}.items():
        client.set_model_version_tag(settings.model_name, version, key, str(value))
    client.set_registered_model_alias(settings.model_name, registry.CHALLENGER, version)
    return version
