"""The evaluate step: held-out measures of the candidates and the report of the chosen one.

- `measure`: the cost-minimising threshold on the valid split, PR AUC there, metrics on the test split
  at that threshold (`HeldOut`), for one candidate;
- `choose`: the candidate with the best validation PR AUC;
- `report`: feature importance, per-segment metrics (a first bias audit), plots and `evaluation.json`.

The metric functions here are also the gate's (`training.gate`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline

from core.dataset import DatasetConfig
from core.estimate import expected_calibration_error
from core.features import original_feature
from training.candidate import Candidate, HeldOut
from training.data import Splits

log = logging.getLogger(__name__)


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, fp_cost: float, fn_cost: float) -> float:
    """The threshold that minimises fp_cost * FP + fn_cost * FN on the given (validation) data.

    Candidates are the distinct scores; ties go to the higher threshold (fewer offers for the same cost).
    """
    y_true = np.asarray(y_true)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_y = scores[order], y_true[order]
    positives = sorted_y.sum()
    # predicting positive for the top k: FP = k - TP(k), FN = P - TP(k)
    tp = np.cumsum(sorted_y)
    k = np.arange(1, len(sorted_y) + 1)
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    cost = fp_cost * (k - tp) + fn_cost * (positives - tp)
    cost = np.where(last_of_run, cost, np.inf)
    none_cost = fn_cost * positives
    best = int(np.argmin(cost))
    if cost[best] >= none_cost:
        return float(np.nextafter(sorted_scores[0], np.inf))
    return float(sorted_scores[best])


def classification_metrics(
    y_true, scores, threshold: float, fp_cost: float = 0.0, fn_cost: float = 0.0
) -> dict:
    y_true = np.asarray(y_true).astype(int)
    predicted = (np.asarray(scores) >= threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    tn, fp, fn, tp = confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    return {
        "roc_auc": float(roc_auc_score(y_true, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y_true, scores)) if both else float("nan"),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "brier": float(brier_score_loss(y_true, scores)),
        # what performance estimated without labels rests on (core.estimate): 10 equal-count bins
        "calibration_error": float(expected_calibration_error(y_true, scores)),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
        "positive_rate": float(predicted.mean()),
        "cost_per_customer": float((fp_cost * fp + fn_cost * fn) / max(len(y_true), 1)),
        "n": len(y_true),
    }


MISSING_SEGMENT = "(missing)"  # the segment of records without a value in the column


def segment_metrics(features: pd.DataFrame, y_true, scores, threshold: float, columns) -> pd.DataFrame:
    rows = []
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    for column in columns:
        col = features[column]
        values = col.astype(str).where(col.notna(), MISSING_SEGMENT).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            m = classification_metrics(y_true[mask], scores[mask], threshold)
            rows.append(
                {
                    "column": column,
                    "segment": value,
                    "n": int(mask.sum()),
                    "label_rate": float(y_true[mask].mean()),  # share of positives (observed)
                    "roc_auc": m["roc_auc"],
                    "recall": m["recall"],
                    "precision": m["precision"],
                    "positive_rate": m["positive_rate"],
                }
            )
    return pd.DataFrame(rows)


def segment_gaps(
    table: pd.DataFrame, metrics=("recall", "precision", "positive_rate")
) -> dict[str, dict[str, float]]:
    """Largest difference between segments of the same column, per metric."""
    gaps: dict[str, dict[str, float]] = {}
    for column, group in table.groupby("column"):
        gaps[str(column)] = {m: float(group[m].max() - group[m].min()) for m in metrics}
    return gaps


def save_plots(
    y_true,
    scores,
    threshold: float,
    importances: pd.Series | None,
    folder: Path,
    positive_word: str = "positive",
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fpr, tpr, _ = roc_curve(y_true, scores)
    precision, recall, _ = precision_recall_curve(y_true, scores)
    prob_true, prob_pred = calibration_curve(y_true, scores, n_bins=10, strategy="quantile")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    axes[0].plot(fpr, tpr, label=f"AUC {roc_auc_score(y_true, scores):.3f}")
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].set(title="ROC (test)", xlabel="false positive rate", ylabel="true positive rate")
    axes[0].legend()
    axes[1].plot(recall, precision, label=f"AP {average_precision_score(y_true, scores):.3f}")
    pred = np.asarray(scores) >= threshold
    axes[1].scatter(
        [recall_score(y_true, pred)],
        [precision_score(y_true, pred, zero_division=0)],
        color="red",
        zorder=3,
        label=f"threshold {threshold:.3f}",
    )
    axes[1].set(title="Precision-recall (test)", xlabel="recall", ylabel="precision")
    axes[1].legend()
    axes[2].plot(prob_pred, prob_true, "o-")
    axes[2].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[2].set(title="Calibration (test)", xlabel="mean predicted", ylabel=f"observed {positive_word} rate")
    fig.tight_layout()
    paths.append(folder / "curves.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    if importances is not None and len(importances):
        top = importances.sort_values().tail(15)
        fig, ax = plt.subplots(figsize=(7, 5))
        ax.barh(top.index, top.to_numpy())
        ax.set(title="Feature importance (gain share, by input feature)")
        fig.tight_layout()
        paths.append(folder / "feature_importance.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def held_out_measures(
    y_valid, valid_scores: np.ndarray, y_test, test_scores: np.ndarray, fp_cost: float, fn_cost: float
) -> HeldOut:
    """Threshold chosen on the valid split (never on the test split), metrics on the test split at it."""
    threshold = choose_threshold(np.asarray(y_valid), valid_scores, fp_cost, fn_cost)
    return HeldOut(
        threshold=threshold,
        valid_pr_auc=float(average_precision_score(y_valid, valid_scores)),
        test=classification_metrics(y_test, test_scores, threshold, fp_cost, fn_cost),
        valid_scores=valid_scores,
        test_scores=test_scores,
    )


def measure(candidate: Candidate, splits: Splits, config: DatasetConfig) -> Candidate:
    """The candidate with its held-out measures."""
    pipe = candidate.pipeline
    valid_scores = pipe.predict_proba(splits.X["valid"])[:, 1]
    test_scores = pipe.predict_proba(splits.X["test"])[:, 1]
    measures = held_out_measures(
        splits.y["valid"], valid_scores, splits.y["test"], test_scores, config.fp_cost, config.fn_cost
    )
    return replace(candidate, held_out=measures)


def choose(candidates: Sequence[Candidate]) -> Candidate:
    """The best validation PR AUC; on a tie the first (the baseline)."""
    chosen = max(candidates, key=lambda c: c.measured.valid_pr_auc)
    log.info(
        "chosen: %s (valid PR AUC %.4f vs %s)",
        chosen.name,
        chosen.measured.valid_pr_auc,
        ", ".join(f"{c.name} {c.measured.valid_pr_auc:.4f}" for c in candidates),
    )
    return chosen


def feature_importance(pipe: Pipeline, config: DatasetConfig) -> pd.Series:
    """Importance per input feature: XGBoost gain share or |coefficient| share, one-hot columns summed."""
    names = pipe.named_steps["preprocess"].get_feature_names_out()
    model = pipe.named_steps["model"]
    raw = model.feature_importances_ if hasattr(model, "feature_importances_") else np.abs(model.coef_[0])
    series = pd.Series(raw, index=[original_feature(n, config) for n in names]).groupby(level=0).sum()
    return (series / series.sum()).sort_values(ascending=False)


@dataclass(frozen=True)
class Report:
    """What the training run records about the chosen candidate (artifact folder `evaluation/`)."""

    chosen: Candidate
    candidates: tuple[Candidate, ...]
    y_test: np.ndarray
    importance: pd.Series
    segments: pd.DataFrame
    positive_word: str = "positive"  # the data set's word for a positive record (plots' labels)

    def summary(self) -> dict:
        """The body of evaluation.json."""
        tuned = next((c for c in self.candidates if c.cv_pr_auc is not None), None)
        held = self.chosen.measured
        return {
            "chosen": self.chosen.name,
            "threshold": held.threshold,
            "test": held.test,
            "segment_gaps": segment_gaps(self.segments),
            "candidates": {
                c.name: {
                    "valid_pr_auc": c.measured.valid_pr_auc,
                    "threshold": c.measured.threshold,
                    "test": c.measured.test,
                }
                for c in self.candidates
            },
            "best_params": tuned.params if tuned else {},
            "cv_pr_auc": tuned.cv_pr_auc if tuned else None,
        }

    def write(self, folder: Path) -> Path:
        """plots/, segment_metrics.csv, feature_importance.csv and evaluation.json into `folder`."""
        held = self.chosen.measured
        save_plots(
            self.y_test,
            held.test_scores,
            held.threshold,
            self.importance,
            folder / "plots",
            self.positive_word,
        )
        self.segments.to_csv(folder / "segment_metrics.csv", index=False)
        self.importance.rename("importance").to_csv(folder / "feature_importance.csv")
        (folder / "evaluation.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        return folder


def report(
    chosen: Candidate, candidates: Sequence[Candidate], splits: Splits, config: DatasetConfig
) -> Report:
    held = chosen.measured
    X_test, y_test = splits.X["test"], splits.y["test"]
    return Report(
        chosen=chosen,
        candidates=tuple(candidates),
        y_test=y_test.to_numpy(),
        importance=feature_importance(chosen.pipeline, config),
        segments=segment_metrics(X_test, y_test, held.test_scores, held.threshold, config.segments),
        positive_word=config.positive_word,
    )
