"""Drift and live quality of one window of logged predictions against the champion's reference sample.

Pure computation (no database, no registry), so tests and the calibration script call it directly.

- Data drift (Evidently 0.7): one `ValueDrift` per feature with an explicit method and threshold
  (numeric features: `num_method`; categorical and binary features: `cat_method`), and
  `DriftedColumnsCount` for the share. Methods are set explicitly because Evidently's default changes
  with the sample size; each score is stored with its method and threshold.
- Prediction drift: `ValueDrift` on the model score.
- Data quality, which drift tests do not see: a rise of a feature's missing-value share (Evidently's
  drift tests drop missing values) and the share of categorical values never seen in the reference.
- Live quality where feedback labels exist: ROC AUC, precision, recall, F1 at the model threshold.

The window alarms when any of: drifted-feature share >= `share_threshold`, prediction drift, a missing
share rise > `missing_share_delta`, unseen categories > `unseen_category_share`, or a live quality
figure below its floor (with at least `min_labelled` labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import DriftedColumnsCount, ValueDrift
from evidently.presets import DataDriftPreset
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from core.dataset import DatasetConfig
from monitoring.settings import DriftSettings, QualitySettings

SCORE = "score"
LABEL = "label"
# Evidently methods whose score is a p-value (drift when it is below the threshold); the others are
# distances (drift when at or above the threshold).
P_VALUE_METHODS = {
    "ks",
    "chisquare",
    "z",
    "t_test",
    "mannw",
    "anderson",
    "fisher_exact",
    "g_test",
    "cramer_von_mises",
    "epps_singleton",
    "empirical_mmd",
}


def is_drifted(method: str, score: float, threshold: float) -> bool:
    if score is None or np.isnan(score):
        return False
    return score < threshold if method in P_VALUE_METHODS else score >= threshold


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    method: str
    threshold: float
    score: float
    drifted: bool
    missing_share: float = 0.0
    reference_missing_share: float = 0.0
    unseen_share: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DriftResult:
    n_current: int
    n_reference: int
    features: list[FeatureDrift]
    drift_share: float
    drifted_count: int
    prediction_method: str
    prediction_threshold: float
    prediction_score: float
    prediction_drift: bool
    quality: dict[str, float | int | None]
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # what crossed, without figures (the trigger's dedupe key)
    report: Any = None  # the Evidently snapshot (save_html)

    @property
    def alarm(self) -> bool:
        return bool(self.reasons)

    @property
    def dataset_drift(self) -> bool:
        return any(r.startswith("drift share") for r in self.reasons)

    def details(self) -> dict[str, Any]:
        return {
            "features": [f.as_dict() for f in self.features],
            "prediction": {
                "method": self.prediction_method,
                "threshold": self.prediction_threshold,
                "score": self.prediction_score,
                "drifted": self.prediction_drift,
            },
            "quality": self.quality,
        }

    def summary(self) -> str:
        drifted = [
            f"{f.feature} ({f.method} {f.score:.3f} >= {f.threshold})"
            if f.method not in P_VALUE_METHODS
            else f"{f.feature} ({f.method} p={f.score:.3g} < {f.threshold})"
            for f in self.features
            if f.drifted
        ]
        q = self.quality
        quality = (
            f"live ROC AUC {q['roc_auc']:.3f} recall {q['recall']:.3f} on {q['n_labelled']} labels"
            if q.get("roc_auc") is not None
            else f"{q.get('n_labelled', 0)} labels"
        )
        return (
            f"{self.n_current} records vs {self.n_reference} reference; drift share {self.drift_share:.2f} "
            f"({self.drifted_count}/{len(self.features)}{': ' + ', '.join(drifted) if drifted else ''}); "
            f"score drift {self.prediction_method} {self.prediction_score:.3f} "
            f"({'drift' if self.prediction_drift else 'no drift'}); {quality}"
        )


def data_definition(config: DatasetConfig) -> DataDefinition:
    return DataDefinition(
        numerical_columns=[*config.of_type("numeric"), SCORE],
        categorical_columns=[*config.of_type("categorical"), *config.of_type("binary")],
    )


def _evidently_frame(frame: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    out = {}
    for feature in config.features:
        col = frame[feature.name] if feature.name in frame else pd.Series(np.nan, index=frame.index)
        if feature.type == "categorical":
            out[feature.name] = col.astype(object).where(col.notna(), None)
        elif feature.type == "binary":  # categorical for Evidently: "0" / "1"
            num = pd.to_numeric(col, errors="coerce")
            out[feature.name] = num.map(lambda v: None if pd.isna(v) else str(int(v))).astype(object)
        else:
            out[feature.name] = pd.to_numeric(col, errors="coerce").astype("float64")
    out[SCORE] = pd.to_numeric(frame[SCORE], errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def live_quality(labels: pd.Series, scores: pd.Series, threshold: float) -> dict[str, float | int | None]:
    mask = labels.notna()
    y = labels[mask].astype(int).to_numpy()
    s = scores[mask].astype(float).to_numpy()
    out: dict[str, float | int | None] = {
        "n_labelled": int(len(y)),
        "threshold": float(threshold),
        "roc_auc": None,
        "precision": None,
        "recall": None,
        "f1": None,
        "positive_share": float(y.mean()) if len(y) else None,
    }
    if len(y) == 0:
        return out
    pred = (s >= threshold).astype(int)
    out["precision"] = float(precision_score(y, pred, zero_division=0))
    out["recall"] = float(recall_score(y, pred, zero_division=0))
    out["f1"] = float(f1_score(y, pred, zero_division=0))
    if len(np.unique(y)) == 2:
        out["roc_auc"] = float(roc_auc_score(y, s))
    return out


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DatasetConfig,
    drift: DriftSettings,
    quality: QualitySettings,
    threshold: float,
    *,
    summary_table: bool = True,
) -> DriftResult:
    """`reference`: features + score (+ label); `current`: features + score (+ label from feedback, NaN when none).

    `summary_table` adds Evidently's DataDriftPreset summary (the familiar drift table in the HTML report,
    ~5 s more); without it the report holds the same per-column ValueDrift metrics and DriftedColumnsCount
    with the same methods and thresholds, so the figures are identical.
    """
    ref = _evidently_frame(reference, config)
    cur = _evidently_frame(current, config)
    kinds = {f.name: f.type for f in config.features}
    methods = {
        n: (drift.num_method, drift.num_threshold)
        if k == "numeric"
        else (drift.cat_method, drift.cat_threshold)
        for n, k in kinds.items()
    }
    # A column with no value left in the window cannot be tested for distribution drift: it is
    # judged by the missing-share check alone.
    testable = [n for n in config.feature_names if cur[n].notna().sum() > 0 and ref[n].notna().sum() > 0]
    score_metric = ValueDrift(
        column=SCORE, method=drift.prediction_method, threshold=drift.prediction_threshold
    )
    column_tests = dict(
        columns=testable,
        num_method=drift.num_method,
        cat_method=drift.cat_method,
        num_threshold=drift.num_threshold,
        cat_threshold=drift.cat_threshold,
        drift_share=drift.share_threshold,
    )
    if summary_table:
        metrics: list = [DataDriftPreset(**column_tests), score_metric]
    else:
        metrics = [
            DriftedColumnsCount(**column_tests),
            *[ValueDrift(column=c, method=methods[c][0], threshold=methods[c][1]) for c in testable],
            score_metric,
        ]
    definition = data_definition(config)
    snapshot = Report(metrics).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    values: dict[str, float] = {}
    for item in snapshot.dict()["metrics"]:
        cfg = item.get("config", {})
        if cfg.get("type", "").endswith(":ValueDrift"):
            values[cfg["column"]] = float(item["value"])

    features: list[FeatureDrift] = []
    reasons: list[str] = []
    kinds: list[str] = []
    for feature in config.features:
        name = feature.name
        method, thr = methods[name]
        miss_cur = float(cur[name].isna().mean()) if len(cur) else 0.0
        miss_ref = float(ref[name].isna().mean()) if len(ref) else 0.0
        unseen = 0.0
        if feature.type == "categorical":
            known = set(ref[name].dropna().unique()) | set(feature.categories)
            present = cur[name].dropna()
            unseen = float((~present.isin(known)).mean()) if len(present) else 0.0
        score = values.get(name, float("nan"))
        fd = FeatureDrift(
            name, feature.type, method, thr, score, is_drifted(method, score, thr), miss_cur, miss_ref, unseen
        )
        features.append(fd)
        if miss_cur - miss_ref > drift.missing_share_delta:
            reasons.append(
                f"missing values in {name}: {miss_cur:.1%} vs {miss_ref:.1%} in the reference "
                f"(rise > {drift.missing_share_delta:.0%})"
            )
            kinds.append(f"missing:{name}")
        if unseen > drift.unseen_category_share:
            reasons.append(
                f"unseen categories in {name}: {unseen:.1%} of values (> {drift.unseen_category_share:.0%})"
            )
            kinds.append(f"unseen:{name}")

    drifted_count = sum(f.drifted for f in features)
    share = drifted_count / len(features) if features else 0.0
    if share >= drift.share_threshold and drifted_count:
        names = ", ".join(f.feature for f in features if f.drifted)
        reasons.insert(0, f"drift share {share:.2f} >= {drift.share_threshold} ({names})")
        kinds.insert(0, "drift_share")
    pscore = values.get(SCORE, float("nan"))
    pdrift = is_drifted(drift.prediction_method, pscore, drift.prediction_threshold)
    if pdrift:
        reasons.append(
            f"prediction drift: {drift.prediction_method} {pscore:.3f} (threshold {drift.prediction_threshold})"
        )
        kinds.append("prediction_drift")

    labels = current[LABEL] if LABEL in current else pd.Series(np.nan, index=current.index)
    q = live_quality(labels.reset_index(drop=True), cur[SCORE], threshold)
    if q["n_labelled"] >= quality.min_labelled:
        for metric, floor in quality.floors.items():
            value = q.get(metric)
            if value is not None and value < floor:
                reasons.append(f"live {metric} {value:.3f} < floor {floor} ({q['n_labelled']} labels)")
                kinds.append(f"quality:{metric}")
    return DriftResult(
        len(cur),
        len(ref),
        features,
        share,
        drifted_count,
        drift.prediction_method,
        drift.prediction_threshold,
        pscore,
        pdrift,
        q,
        reasons,
        kinds,
        snapshot,
    )
