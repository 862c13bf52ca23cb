"""Evaluation on held-out data: metrics at the decision threshold, the cost-based threshold choice,
plots and per-segment metrics (a first bias audit)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import (  # noqa: E402
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
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
        "positive_rate": float(predicted.mean()),
        "cost_per_customer": float((fp_cost * fp + fn_cost * fn) / max(len(y_true), 1)),
        "n": len(y_true),
    }


def segment_metrics(features: pd.DataFrame, y_true, scores, threshold: float, columns) -> pd.DataFrame:
    rows = []
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    for column in columns:
        values = features[column].astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            m = classification_metrics(y_true[mask], scores[mask], threshold)
            rows.append(
                {
                    "column": column,
                    "segment": value,
                    "n": int(mask.sum()),
                    "churn_rate": float(y_true[mask].mean()),
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


def save_plots(y_true, scores, threshold: float, importances: pd.Series | None, folder: Path) -> list[Path]:
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
    axes[2].set(title="Calibration (test)", xlabel="mean predicted", ylabel="observed churn rate")
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
