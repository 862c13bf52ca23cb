"""Train, evaluate, log and register: `python -m training.train` (`make train`).

Steps: ingest the source into a content-hashed snapshot (or use `--snapshot`), validate it, split it
(stable hash split: train / valid / test), fit a logistic-regression baseline and an Optuna-tuned
XGBoost (cross-validated on the train split), choose the cost-minimising threshold on the valid split,
measure both on the held-out test split, log everything to MLflow, register the better model (by
validation PR AUC) and point the `challenger` alias at it.

`train()` composes the steps: `load_training_data` here, then `training.fit`, `training.evaluate` and
`training.tracking`; each candidate travels as a `training.candidate.Candidate`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

from core import registry
from core.dataset import ConfigError, DatasetConfig, load_config
from core.logs import setup_logging
from core.settings import load_or_exit
from training import evaluate, fit, tracking
from training.data import DataError, Snapshot, TrainingData, ingest, open_snapshot, split_data
from training.fit import baseline_pipeline, xgb_pipeline
from training.settings import TrainingSettings
from training.validate import validate

# split_data and the pipeline builders stay importable from here (load_tests, the service's tests)
__all__ = [
    "TrainResult",
    "baseline_pipeline",
    "load_training_data",
    "main",
    "split_data",
    "train",
    "xgb_pipeline",
]

log = logging.getLogger("training.train")  # not __name__: `python -m` runs this as __main__


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


def resolve_snapshot(config: DatasetConfig, settings: TrainingSettings, ref: str | None) -> Snapshot:
    return open_snapshot(ref, settings.data_dir) if ref else ingest(config, settings.data_dir)


def load_training_data(settings: TrainingSettings, snapshot_ref: str | None = None) -> TrainingData:
    """The snapshot (ingested, or `snapshot_ref`), validated (DataError when it fails) and split."""
    config = load_config(settings.dataset_config)
    snapshot = resolve_snapshot(config, settings, snapshot_ref)
    frame = snapshot.load()
    report = validate(frame, config)
    report_path = report.write(settings.reports_dir / f"validation-{config.name}-{snapshot.hash[:16]}.json")
    if not report.ok:
        raise DataError(f"{report.summary()} (report: {report_path})")
    positive = str(config.positive_class)
    negative = next(v for v in frame[config.target].dropna().astype(str).unique() if v != positive)
    data = TrainingData(config, snapshot, len(frame), split_data(frame, config), report_path, negative)
    log.info(
        "data %s snapshot %s: %d rows, split %s",
        config.name,
        snapshot.hash[:16],
        data.rows,
        data.splits.sizes(),
    )
    return data


def train(settings: TrainingSettings, snapshot_ref: str | None = None) -> TrainResult:
    data = load_training_data(settings, snapshot_ref)
    config, splits = data.config, data.splits
    experiment_id = registry.configure(settings.tracking_uri, settings.experiment, settings.artifact_root)
    tags = tracking.run_tags(data, settings.git_commit)
    started = time.perf_counter()
    with tracking.training_run(experiment_id, data, settings, tags) as run_id:
        with tracking.candidate_run("baseline-logreg", tags) as fitted_in:
            baseline = fit.fit_baseline(config, splits, settings.seed, fitted_in)
        tuning = fit.tune_xgb(config, splits.X["train"], splits.y["train"], settings)
        with tracking.candidate_run(
            "xgboost-tuned", tags, tuning.best_params, {"cv_pr_auc": tuning.best_value}
        ) as fitted_in:
            xgboost = fit.fit_xgboost(config, splits, tuning, settings, fitted_in)
        baseline, xgboost = (evaluate.measure(c, splits, config) for c in (baseline, xgboost))
        candidates = [baseline, xgboost]
        chosen = evaluate.choose(candidates)
        tracking.log_candidates(candidates)
        tracking.log_choice(chosen, time.perf_counter() - started)
        report = evaluate.report(chosen, candidates, splits, config)
        tracking.log_evaluation(report)
        version = tracking.register(chosen, report, data, settings, tags)
    return TrainResult(
        run_id,
        settings.model_name,
        version,
        chosen.name,
        chosen.measured.threshold,
        chosen.measured.test,
        baseline.measured.test,
        data.snapshot.hash,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    parser.add_argument(
        "--snapshot", help="train on this snapshot (hash prefix) instead of ingesting the source"
    )
    args = parser.parse_args(argv)
    settings = load_or_exit(TrainingSettings)
    setup_logging(settings.log_level, settings.log_format, plain="training")
    try:
        result = train(settings, args.snapshot)
    except (ConfigError, DataError, registry.RegistryError) as exc:
        log.error("error: %s", exc)
        return 2 if isinstance(exc, ConfigError) else 1
    m = result.test_metrics
    log.info(
        "registered %s v%s (%s) as '%s'; test ROC AUC %.4f, PR AUC %.4f, recall %.3f, precision %.3f "
        "at threshold %.3f; run %s",
        result.model_name,
        result.version,
        result.chosen,
        registry.CHALLENGER,
        m["roc_auc"],
        m["pr_auc"],
        m["recall"],
        m["precision"],
        result.threshold,
        result.run_id,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
