"""Train, evaluate, log and register: `python -m training.train` (`make train`).

Steps: ingest the source into a content-hashed snapshot (or use `--snapshot`), validate it, split it
(stable hash split: train / valid / test), fit a logistic-regression baseline and an Optuna-tuned
XGBoost (cross-validated on the train split), choose the cost-minimising threshold on the valid split,
measure both on the held-out test split, log everything to MLflow, register the better model (by
validation PR AUC) and point the `challenger` alias at it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from core import registry
from core.dataset import ConfigError, DatasetConfig, load_config
from core.features import build_preprocessor, original_feature, prepare
from core.settings import load_or_exit
from training.data import DataError, Snapshot, assign_split, ingest, open_snapshot
from training.evaluate import (
    choose_threshold,
    classification_metrics,
    save_plots,
    segment_gaps,
    segment_metrics,
)
from training.settings import TrainingSettings
from training.validate import validate

log = logging.getLogger("training")
REFERENCE_ROWS = 2000


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    version: str
    chosen: str
    threshold: float
    test_metrics: dict
    baseline_test_metrics: dict
    data_hash: str


@dataclass
class Splits:
    X: dict[str, pd.DataFrame]
    y: dict[str, pd.Series]


def split_data(frame: pd.DataFrame, config: DatasetConfig) -> Splits:
    features, label = prepare(frame, config)
    side = assign_split(features, config.split["valid_share"], config.split["test_share"])
    return Splits(
        X={s: features[side == s].reset_index(drop=True) for s in ("train", "valid", "test")},
        y={s: label[side == s].reset_index(drop=True) for s in ("train", "valid", "test")},
    )


def baseline_pipeline(config: DatasetConfig, seed: int) -> Pipeline:
    return Pipeline(
        [
            ("preprocess", build_preprocessor(config, scale=True)),
            ("model", LogisticRegression(max_iter=2000, C=1.0, random_state=seed)),
        ]
    )


def xgb_pipeline(config: DatasetConfig, params: dict, seed: int, threads: int) -> Pipeline:
    return Pipeline(
        [
            ("preprocess", build_preprocessor(config, scale=False)),
            (
                "model",
                XGBClassifier(
                    **params,
                    objective="binary:logistic",
                    eval_metric="logloss",
                    tree_method="hist",
                    random_state=seed,
                    n_jobs=threads,
                ),
            ),
        ]
    )


def tune_xgb(
    config: DatasetConfig, X: pd.DataFrame, y: pd.Series, settings: TrainingSettings
) -> tuple[dict, float]:
    """Optuna TPE search, objective: mean cross-validated PR AUC on the train split."""
    folds = StratifiedKFold(settings.cv_folds, shuffle=True, random_state=settings.seed)

    def objective(trial: optuna.Trial) -> float:
        params = {
            "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
            "max_depth": trial.suggest_int("max_depth", 2, 6),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 20.0, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-2, 20.0, log=True),
        }
        pipe = xgb_pipeline(config, params, settings.seed, settings.threads)
        return float(cross_val_score(pipe, X, y, cv=folds, scoring="average_precision").mean())

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        print(
            f"  tuning trial {trial.number + 1}/{settings.optuna_trials}: cv PR AUC {trial.value:.4f}"
            f" (best {study.best_value:.4f})",
            flush=True,
        )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    study.optimize(objective, n_trials=settings.optuna_trials, callbacks=[progress])
    return study.best_params, float(study.best_value)


def feature_importance(pipe: Pipeline, config: DatasetConfig) -> pd.Series:
    """Importance per input feature: XGBoost gain share or |coefficient| share, one-hot columns summed."""
    names = pipe.named_steps["preprocess"].get_feature_names_out()
    model = pipe.named_steps["model"]
    raw = model.feature_importances_ if hasattr(model, "feature_importances_") else np.abs(model.coef_[0])
    series = pd.Series(raw, index=[original_feature(n, config) for n in names]).groupby(level=0).sum()
    return (series / series.sum()).sort_values(ascending=False)


def feature_schema(config: DatasetConfig) -> list[dict]:
    return [f.as_dict() for f in config.features]


def resolve_snapshot(config: DatasetConfig, settings: TrainingSettings, ref: str | None) -> Snapshot:
    return open_snapshot(ref, settings.data_dir) if ref else ingest(config, settings.data_dir)


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
) -> str:
    """Inside an active run: log the held-out test set (for the gate), the drift reference, and the model
    with its signature, input example, threshold and feature schema; register it and alias it
    `challenger`. Returns the new version."""
    run = mlflow.active_run()
    _log_frame(test_set, "data", "test.parquet")
    _log_frame(reference, "reference", "reference.parquet")
    signature = infer_signature(sample, pipe.predict_proba(sample))
    metadata = {
        **metadata,
        "threshold": float(threshold),
        "feature_schema": feature_schema(config),
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


def train(settings: TrainingSettings, snapshot_ref: str | None = None) -> TrainResult:
    config = load_config(settings.dataset_config)
    snapshot = resolve_snapshot(config, settings, snapshot_ref)
    frame = snapshot.load()
    report = validate(frame, config)
    report_path = report.write(settings.reports_dir / f"validation-{config.name}-{snapshot.hash[:16]}.json")
    if not report.ok:
        raise DataError(f"{report.summary()} (report: {report_path})")
    splits = split_data(frame, config)
    sizes = {s: len(splits.y[s]) for s in splits.y}
    print(f"data {config.name} snapshot {snapshot.hash[:16]}: {len(frame)} rows, split {sizes}", flush=True)

    experiment_id = registry.configure(settings.tracking_uri, settings.experiment, settings.artifact_root)
    tags = {
        "git_commit": settings.git_commit,
        "data_hash": snapshot.hash,
        "dataset": config.name,
        "data_snapshot": snapshot.hash[:16],
    }
    Xtr, ytr, Xva, yva, Xte, yte = (
        splits.X["train"],
        splits.y["train"],
        splits.X["valid"],
        splits.y["valid"],
        splits.X["test"],
        splits.y["test"],
    )
    started = time.perf_counter()
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{config.name}", tags=tags) as run:
        mlflow.log_params(
            {
                "dataset": config.name,
                "rows": len(frame),
                "seed": settings.seed,
                "optuna_trials": settings.optuna_trials,
                "cv_folds": settings.cv_folds,
                "fp_cost": config.fp_cost,
                "fn_cost": config.fn_cost,
                **{f"rows_{k}": v for k, v in sizes.items()},
            }
        )
        mlflow.log_artifact(str(report_path), "validation")
        mlflow.log_artifact(str(config.path), "config")

        candidates: dict[str, dict] = {}
        # --- baseline
        with mlflow.start_run(run_name="baseline-logreg", nested=True, tags=tags):
            base = baseline_pipeline(config, settings.seed).fit(Xtr, ytr)
            candidates["logreg"] = {"pipe": base}
        # --- tuned XGBoost
        print(f"tuning XGBoost: {settings.optuna_trials} trials x {settings.cv_folds}-fold CV", flush=True)
        best_params, cv_score = tune_xgb(config, Xtr, ytr, settings)
        with mlflow.start_run(run_name="xgboost-tuned", nested=True, tags=tags):
            mlflow.log_params(best_params)
            mlflow.log_metric("cv_pr_auc", cv_score)
            xgb = xgb_pipeline(config, best_params, settings.seed, settings.threads).fit(Xtr, ytr)
            # Served models predict on one thread: a gunicorn worker is one process per core, and for a
            # handful of rows OpenMP's thread hand-off costs more than it saves.
            xgb.named_steps["model"].set_params(n_jobs=1)
            candidates["xgboost"] = {"pipe": xgb}

        for name, cand in candidates.items():
            pipe = cand["pipe"]
            valid_scores = pipe.predict_proba(Xva)[:, 1]
            cand["threshold"] = choose_threshold(yva.to_numpy(), valid_scores, config.fp_cost, config.fn_cost)
            cand["valid_pr_auc"] = float(average_precision_score(yva, valid_scores))
            cand["valid_scores"] = valid_scores
            cand["test_scores"] = pipe.predict_proba(Xte)[:, 1]
            cand["test"] = classification_metrics(
                yte, cand["test_scores"], cand["threshold"], config.fp_cost, config.fn_cost
            )
            mlflow.log_metrics(
                {
                    f"{name}_valid_pr_auc": cand["valid_pr_auc"],
                    f"{name}_threshold": cand["threshold"],
                    **{f"{name}_test_{k}": v for k, v in cand["test"].items()},
                }
            )

        chosen = max(candidates, key=lambda n: candidates[n]["valid_pr_auc"])
        best = candidates[chosen]
        pipe, threshold, test = best["pipe"], best["threshold"], best["test"]
        print(
            f"chosen: {chosen} (valid PR AUC {best['valid_pr_auc']:.4f} vs "
            + ", ".join(f"{n} {c['valid_pr_auc']:.4f}" for n, c in candidates.items())
            + ")",
            flush=True,
        )
        mlflow.log_params({"model": chosen, "threshold": threshold})
        mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
        mlflow.log_metric("train_seconds", time.perf_counter() - started)

        importance = feature_importance(pipe, config)
        segments = segment_metrics(Xte, yte, best["test_scores"], threshold, config.segments)
        gaps = segment_gaps(segments)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            save_plots(yte.to_numpy(), best["test_scores"], threshold, importance, folder / "plots")
            segments.to_csv(folder / "segment_metrics.csv", index=False)
            importance.rename("importance").to_csv(folder / "feature_importance.csv")
            evaluation = {
                "chosen": chosen,
                "threshold": threshold,
                "test": test,
                "segment_gaps": gaps,
                "candidates": {
                    n: {"valid_pr_auc": c["valid_pr_auc"], "threshold": c["threshold"], "test": c["test"]}
                    for n, c in candidates.items()
                },
                "best_params": best_params,
                "cv_pr_auc": cv_score,
            }
            (folder / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
            mlflow.log_artifacts(str(folder), "evaluation")

        metadata = {
            "dataset": config.name,
            "target": config.target,
            "positive_class": str(config.positive_class),
            "data_hash": snapshot.hash,
            "git_commit": tags["git_commit"],
            "algorithm": chosen,
            "test_metrics": test,
            "feature_importance": importance.round(6).to_dict(),
        }
        reference = Xva.assign(label=yva.to_numpy(), score=best["valid_scores"])
        reference = reference.sample(min(REFERENCE_ROWS, len(reference)), random_state=settings.seed)
        version = log_model_version(
            pipe,
            config,
            settings,
            threshold=threshold,
            sample=Xtr.head(100),
            test_set=Xte.assign(label=yte.to_numpy()),
            reference=reference,
            tags={**tags, "algorithm": chosen},
            metadata=metadata,
        )
    return TrainResult(
        run.info.run_id,
        settings.model_name,
        version,
        chosen,
        threshold,
        test,
        candidates["logreg"]["test"],
        snapshot.hash,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    parser.add_argument(
        "--snapshot", help="train on this snapshot (hash prefix) instead of ingesting the source"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_or_exit(TrainingSettings)
    try:
        result = train(settings, args.snapshot)
    except (ConfigError, DataError, registry.RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    m = result.test_metrics
    print(
        f"registered {result.model_name} v{result.version} ({result.chosen}) as '{registry.CHALLENGER}'; "
        f"test ROC AUC {m['roc_auc']:.4f}, PR AUC {m['pr_auc']:.4f}, recall {m['recall']:.3f}, "
        f"precision {m['precision']:.3f} at threshold {result.threshold:.3f}; run {result.run_id}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
