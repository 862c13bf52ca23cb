"""The calibrate step: wrap a fitted pipeline in a probability calibration when it helps.

CBPE (core.estimate: performance estimated without labels) reads a score p as "a positive with
probability p"; a model whose scores are not calibrated gets a biased estimate. `calibrate` tries
sklearn's CalibratedClassifierCV (sigmoid and isotonic) on the valid split, the fitted pipeline frozen
(sklearn.frozen.FrozenEstimator), and keeps one only when it lowers the expected calibration error by
more than MIN_GAIN, measured out of fold: the valid split in two halves (stratified, seeded), each
half's calibrated scores from a calibrator fitted on the other half, compared with the uncalibrated
scores of the same records. The kept method is then fitted on the whole valid split. Deterministic: no
random step but the seeded split.

Not yet a step of `training.train`: the served pipeline's shape (preprocess + XGBoost) is what the fast
path, the explanations and the feature importance read. `make bench-estimate` measures it against the
monitor's way (an isotonic map on the reference, for the estimate only, core.estimate).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import StratifiedKFold

from core.estimate import expected_calibration_error

log = logging.getLogger(__name__)

METHODS = ("sigmoid", "isotonic")
NONE = "none"
# a calibration is kept only when it lowers the out-of-fold error by more than this: the error of a
# calibrated model measured on ~1000 records varies by about as much (10 bins of ~100)
MIN_GAIN = 0.01


@dataclass(frozen=True)
class ProbabilityCalibration:
    """The calibration chosen and the out-of-fold calibration error of every method tried."""

    method: str  # none | sigmoid | isotonic
    model: object  # the pipeline, or the CalibratedClassifierCV around it
    errors: dict[str, float] = field(default_factory=dict)  # method -> out-of-fold ECE on the valid split

    def summary(self) -> dict:
        return {"method": self.method, "valid_oof_ece": self.errors}


def calibrated(model, method: str, X: pd.DataFrame, y: pd.Series) -> CalibratedClassifierCV:
    return CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(X, y)


def out_of_fold_errors(model, X: pd.DataFrame, y: pd.Series, seed: int, methods=METHODS) -> dict[str, float]:
    """Expected calibration error of the raw scores and of each method's out-of-fold scores, on the
    same records (the valid split)."""
    y = pd.Series(np.asarray(y).astype(int))
    raw = model.predict_proba(X)[:, 1]
    errors = {NONE: expected_calibration_error(y, raw)}
    folds = list(StratifiedKFold(2, shuffle=True, random_state=seed).split(X, y))
    for method in methods:
        oof = np.empty(len(y))
        for fit_rows, check_rows in folds:
            wrapped = calibrated(model, method, X.iloc[fit_rows], y.iloc[fit_rows])
            oof[check_rows] = wrapped.predict_proba(X.iloc[check_rows])[:, 1]
        errors[method] = expected_calibration_error(y, oof)
    return errors


def calibrate(
    model, X_valid: pd.DataFrame, y_valid: pd.Series, seed: int, methods=METHODS
) -> ProbabilityCalibration:
    """`model` as it is, or wrapped in the calibration with the lowest out-of-fold error when that is
    lower than the raw scores' error on the same records by more than MIN_GAIN."""
    errors = out_of_fold_errors(model, X_valid, y_valid, seed, methods)
    best = min(errors, key=lambda m: (errors[m], m != NONE))
    if best != NONE and errors[best] > errors[NONE] - MIN_GAIN:
        best = NONE
    log.info(
        "calibration on the valid split (out-of-fold ECE): %s; kept: %s",
        ", ".join(f"{m} {e:.4f}" for m, e in errors.items()),
        best,
    )
    if best == NONE:
        return ProbabilityCalibration(NONE, model, errors)
    return ProbabilityCalibration(
        best, calibrated(model, best, X_valid, pd.Series(np.asarray(y_valid))), errors
    )
