"""The type the training steps pass along: one candidate model and what is known about it.

`training.fit` creates a `Candidate` (name, fitted pipeline, hyperparameters, the MLflow run it was
fitted in, the cross-validated score of the tuning), `training.evaluate.measure` adds its `HeldOut`
measures (threshold chosen on the valid split, metrics on the test split), `training.tracking` logs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline


@dataclass(frozen=True)
class HeldOut:
    """A candidate's measures on the splits it was not fitted on."""

    threshold: float  # cost-minimising on the valid split
    valid_pr_auc: float
    test: dict[str, Any]  # training.evaluate.classification_metrics on the test split at `threshold`
    valid_scores: np.ndarray = field(repr=False)
    test_scores: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Candidate:
    name: str  # "logreg", "xgboost": the prefix of its metrics in the training run
    pipeline: Pipeline  # preprocessing + model, fitted on the train split
    params: dict[str, Any]  # the model's hyperparameters (the tuned ones for XGBoost)
    run_id: str | None = None  # the nested MLflow run it was fitted in
    cv_pr_auc: float | None = None  # best mean cross-validated PR AUC of the tuning, if tuned
    held_out: HeldOut | None = None  # set by training.evaluate.measure

    @property
    def measured(self) -> HeldOut:
        if self.held_out is None:
            raise ValueError(f"candidate '{self.name}' has not been evaluated yet")
        return self.held_out
