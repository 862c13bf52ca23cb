"""Performance estimated without labels (CBPE), and the calibration it rests on.

Confidence-based performance estimation (NannyML's CBPE): when a model's probabilities are calibrated,
a record scored p is a positive with probability p, so a window's confusion matrix at the model's
threshold has an expected value computed from the probabilities alone:

    E[TP] = sum of p over the records predicted positive    E[FP] = sum of (1 - p) over them
    E[FN] = sum of p over the records predicted negative    E[TN] = sum of (1 - p) over them

and recall = E[TP] / (E[TP] + E[FN]), precision = E[TP] / (E[TP] + E[FP]) (NannyML's estimate_recall,
estimate_precision). ROC AUC: NannyML's estimate_roc_auc, the ROC curve whose true and false positive
counts at each cut of the scores are the cumulated p and 1 - p (`expected_roc_auc`).

The band: the realized metric of a window is itself random even when the estimate is exact (which
records of the window churn). Labels drawn from the probabilities (`draws` Monte Carlo draws, seeded)
give the realized metric's distribution; the band is its central `level` interval. It is the band of a
calibrated model: calibration error and concept shift (P(label | features) changed) are outside it.

Written here rather than taken from NannyML: nannyml 0.13 requires FLAML[automl], which pins
xgboost < 3 (the lock has 3.2), plus lightgbm, kaleido, gcsfs/s3fs and a telemetry client the lock does
not carry. tests/unit/test_estimate.py checks these functions against the method's formulas on a
hand-computed fixture. Used by the monitor (each window) and by training and the gate (calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

METRICS = ("roc_auc", "recall", "precision")
DRAWS = 400  # Monte Carlo label draws for the band
LEVEL = 0.95  # the band's nominal coverage
CALIBRATION_BINS = 10


def expected_confusion(probabilities, scores, threshold: float) -> dict[str, float]:
    """The expected confusion matrix at `threshold`: predicted positive when score >= threshold, the
    record a positive with its (calibrated) probability."""
    p = np.asarray(probabilities, dtype=float)
    predicted = np.asarray(scores, dtype=float) >= threshold
    return {
        "tp": float(p[predicted].sum()),
        "fp": float((1 - p[predicted]).sum()),
        "fn": float(p[~predicted].sum()),
        "tn": float((1 - p[~predicted]).sum()),
    }


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def expected_roc_auc(probabilities, scores) -> float:
    """NannyML's estimate_roc_auc: the area under the ROC curve whose cumulated true and false positives,
    cutting the scores from the highest down, are the cumulated p and 1 - p. Tied scores are one cut
    (as sklearn's roc_curve): the records of a tie move together."""
    p = np.asarray(probabilities, dtype=float)
    s = np.asarray(scores, dtype=float)
    if len(p) == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    p, s = p[order], s[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tps = np.r_[0.0, np.cumsum(p)[last_of_tie]]
    fps = np.r_[0.0, np.cumsum(1 - p)[last_of_tie]]
    if tps[-1] <= 0 or fps[-1] <= 0:
        return float("nan")
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (Mann-Whitney)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2
    return ranks


def simulated_metrics(
    probabilities, scores, threshold: float, draws: int = DRAWS, seed: int = 0
) -> dict[str, np.ndarray]:
    """The realized ROC AUC, recall and precision of `draws` label sets drawn from the probabilities
    (NaN for a draw where the metric is undefined, e.g. no positive)."""
    p = np.asarray(probabilities, dtype=float)
    s = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    labels = rng.random((draws, len(p))) < p  # draws x records
    predicted = s >= threshold
    positives = labels.sum(axis=1).astype(float)
    negatives = len(p) - positives
    tp = (labels & predicted).sum(axis=1).astype(float)
    flagged = float(predicted.sum())
    ranks = _average_ranks(s)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (labels @ ranks - positives * (positives + 1) / 2) / (positives * negatives)
        recall = tp / positives
        precision = np.full(draws, np.nan) if flagged == 0 else tp / flagged
    return {"roc_auc": auc, "recall": recall, "precision": precision}


@dataclass(frozen=True)
class Estimate:
    """One estimated metric: the CBPE value and the band of the realized value."""

    value: float
    low: float
    high: float

    def covers(self, realized: float) -> bool:
        return bool(self.low <= realized <= self.high)


@dataclass(frozen=True)
class PerformanceEstimate:
    """A window's estimated performance (`estimate_performance`)."""

    n: int
    threshold: float
    metrics: dict[str, Estimate]
    confusion: dict[str, float]  # the expected confusion matrix
    level: float = LEVEL
    draws: int = DRAWS
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, metric: str) -> Estimate:
        return self.metrics[metric]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the monitoring run's details)."""
        return {
            "method": "cbpe",
            "n": self.n,
            "threshold": self.threshold,
            "level": self.level,
            "draws": self.draws,
            "expected_confusion": self.confusion,
            **{name: {"value": e.value, "low": e.low, "high": e.high} for name, e in self.metrics.items()},
            **self.extra,
        }


def estimate_performance(
    scores,
    threshold: float,
    probabilities=None,
    *,
    draws: int = DRAWS,
    level: float = LEVEL,
    seed: int = 0,
) -> PerformanceEstimate:
    """ROC AUC, recall and precision at `threshold` of a window without labels.

    `scores`: what the model served (ranked and cut at `threshold`); `probabilities`: the calibrated
    probability of each record (default: the scores, for a calibrated model)."""
    s = np.asarray(scores, dtype=float)
    p = s if probabilities is None else np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    confusion = expected_confusion(p, s, threshold)
    values = {
        "roc_auc": expected_roc_auc(p, s),
        "recall": _ratio(confusion["tp"], confusion["tp"] + confusion["fn"]),
        "precision": _ratio(confusion["tp"], confusion["tp"] + confusion["fp"]),
    }
    sims = simulated_metrics(p, s, threshold, draws, seed)
    tail = (1 - level) / 2
    metrics = {}
    for name in METRICS:
        finite = sims[name][np.isfinite(sims[name])]
        if len(finite) == 0 or np.isnan(values[name]):
            metrics[name] = Estimate(values[name], float("nan"), float("nan"))
            continue
        low, high = np.quantile(finite, [tail, 1 - tail])
        # the band always holds the estimate (a skewed draw distribution must not exclude it)
        metrics[name] = Estimate(values[name], float(min(low, values[name])), float(max(high, values[name])))
    return PerformanceEstimate(len(s), float(threshold), metrics, confusion, level, draws)


@dataclass(frozen=True)
class CalibrationMap:
    """A monotone map from a model's scores to calibrated probabilities (isotonic regression, linear
    between its knots, clipped at the ends): NannyML's CBPE fits one on the reference data, so the
    served scores, their ranking and the threshold stay as they are and only the estimate reads the
    calibrated probabilities."""

    knots: tuple[float, ...]
    values: tuple[float, ...]

    def __call__(self, scores) -> np.ndarray:
        return np.interp(np.asarray(scores, dtype=float), self.knots, self.values)

    def as_dict(self) -> dict[str, list[float]]:
        return {"knots": list(self.knots), "values": list(self.values)}

    @classmethod
    def from_dict(cls, raw: dict) -> CalibrationMap:
        return cls(tuple(map(float, raw["knots"])), tuple(map(float, raw["values"])))


def fit_calibration_map(y_true, scores) -> CalibrationMap:
    """Isotonic regression of the labels on the scores (e.g. the reference sample: the valid split's
    labels and out-of-sample scores)."""
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(np.asarray(scores, dtype=float), np.asarray(y_true, dtype=float))
    return CalibrationMap(tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)))


def expected_calibration_error(y_true, probabilities, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: the records sorted by probability into `bins` bins of equal count
    (the last ones one record shorter when it does not divide), the count-weighted mean over bins of
    |observed positive rate - mean probability|. 0 for a calibrated model on a large sample."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(bins, len(y))):
        total += len(part) * abs(float(y[part].mean()) - float(p[part].mean()))
    return total / len(y)
