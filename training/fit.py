"""The fit step: the candidate pipelines, fitted on the train split.

- baseline: logistic regression on scaled, one-hot encoded features;
- XGBoost tuned by Optuna (TPE, seeded): objective the mean cross-validated PR AUC on the train split,
  one log line per trial (`TrialProgress`); then refitted on the whole train split with the best
  parameters.

No MLflow here: `training.train` runs each fit inside the candidate's MLflow run (`training.tracking`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from core.dataset import DatasetConfig
from core.features import build_preprocessor
from training.candidate import Candidate
from training.data import Splits
from training.settings import TrainingSettings

log = logging.getLogger(__name__)

BASELINE = "logreg"
XGBOOST = "xgboost"
BASELINE_PARAMS = {"C": 1.0, "max_iter": 2000}


def baseline_pipeline(config: DatasetConfig, seed: int) -> Pipeline:
    return Pipeline(
        [
            ("preprocess", build_preprocessor(config, scale=True)),
            ("model", LogisticRegression(**BASELINE_PARAMS, random_state=seed)),
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


@dataclass(frozen=True)
class Tuning:
    best_params: dict
    best_value: float  # mean cross-validated PR AUC of the best trial


class TrialProgress:
    """Optuna callback: one log line per finished trial with its value, the best so far and the time
    since the search started, so a long tuning run shows it is alive and where it stands."""

    def __init__(
        self, total: int, logger: logging.Logger = log, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.total = total
        self.logger = logger
        self.clock = clock
        self.started = clock()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        elapsed = self.clock() - self.started
        try:
            best = study.best_trial
        except ValueError:  # no trial completed yet
            best = None
        if trial.state == optuna.trial.TrialState.COMPLETE:
            outcome = f"cv PR AUC {trial.value:.4f}"
        else:
            outcome = trial.state.name.lower()
        so_far = f"best {best.value:.4f} at trial {best.number + 1}" if best else "no complete trial yet"
        self.logger.info(
            "  tuning trial %d/%d: %s (%s), %.1f s", trial.number + 1, self.total, outcome, so_far, elapsed
        )


def tune_xgb(config: DatasetConfig, X: pd.DataFrame, y: pd.Series, settings: TrainingSettings) -> Tuning:
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

    log.info("tuning XGBoost: %d trials x %d-fold CV", settings.optuna_trials, settings.cv_folds)
    # Optuna's own INFO line per trial would repeat TrialProgress's
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    study.optimize(
        objective, n_trials=settings.optuna_trials, callbacks=[TrialProgress(settings.optuna_trials)]
    )
    return Tuning(study.best_params, float(study.best_value))


def fit_baseline(config: DatasetConfig, splits: Splits, seed: int, run_id: str | None = None) -> Candidate:
    pipe = baseline_pipeline(config, seed).fit(splits.X["train"], splits.y["train"])
    return Candidate(BASELINE, pipe, dict(BASELINE_PARAMS), run_id=run_id)


def fit_xgboost(
    config: DatasetConfig,
    splits: Splits,
    tuning: Tuning,
    settings: TrainingSettings,
    run_id: str | None = None,
) -> Candidate:
    pipe = xgb_pipeline(config, tuning.best_params, settings.seed, settings.threads)
    pipe.fit(splits.X["train"], splits.y["train"])
    # Served models predict on one thread: a service worker is one process per core, and for a
    # handful of rows OpenMP's thread hand-off costs more than it saves.
    pipe.named_steps["model"].set_params(n_jobs=1)
    return Candidate(XGBOOST, pipe, dict(tuning.best_params), run_id=run_id, cv_pr_auc=tuning.best_value)
