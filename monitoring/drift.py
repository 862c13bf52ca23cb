"""Drift and live quality of one window of logged predictions against the champion's reference sample.

Pure computation (no database, no registry), so tests and the drift bench call it directly.

- Data drift: each feature's distance to the reference (numeric: normed Wasserstein; categorical and
  binary: Jensen-Shannon) and the score's, judged by the alarm policy of core.drift against the bounds
  calibrated with the champion's training run (`judge`: one of the top-k important features past its
  bound, the importance-weighted drift share, the score; warning and alarm levels). The figures are
  computed by core.drift, the same function the calibration and the drift bench use; the Evidently report
  (`ValueDrift` per column with the same methods and the calibrated bounds) shows them.
- Data quality, which drift tests do not see: a rise of a feature's missing-value share (the distances
  drop missing values) and the share of categorical values never seen in the reference.
- Live quality where feedback labels exist: ROC AUC, precision, recall, F1 at the model threshold.

The window alarms when the drift policy alarms, a missing share rises > `missing_share_delta`, unseen
categories pass `unseen_category_share`, or a live quality figure falls below its floor (with at least
`min_labelled` labels). A drift warning is recorded and shown, and starts nothing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import DriftedColumnsCount, ValueDrift
from evidently.presets import DataDriftPreset
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from core.dataset import DatasetConfig
from core.drift import CAT_METHOD, NUM_METHOD, SCORE, Calibration, DriftPolicy, Verdict, judge, window_scores
from monitoring.settings import DriftSettings, QualitySettings

LABEL = "label"


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    method: str
    threshold: float  # the feature's `drifted` bound for this window size
    score: float
    drifted: bool
    missing_share: float = 0.0
    reference_missing_share: float = 0.0
    unseen_share: float = 0.0
    importance: float = 0.0
    alarm_bound: float | None = None  # top-k features: the bound past which it alarms on its own
    warning_bound: float | None = None

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
    prediction_threshold: float  # the score's alarm bound
    prediction_score: float
    prediction_drift: bool
    quality: dict[str, float | int | None]
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # what crossed, without figures (the trigger's dedupe key)
    report: Any = None  # the Evidently snapshot (save_html)
    verdict: Verdict | None = None  # the drift policy's verdict (level, findings, bounds)
    calibration: Calibration | None = None

    @property
    def alarm(self) -> bool:
        return bool(self.reasons)

    @property
    def level(self) -> str:
        """ok | warning | alarm: the drift policy's level, or alarm when another check alarmed."""
        if self.alarm:
            return "alarm"
        return self.verdict.level if self.verdict else "ok"

    @property
    def warnings(self) -> list[str]:
        return self.verdict.reasons("warning") if self.verdict else []

    @property
    def dataset_drift(self) -> bool:
        return bool(self.verdict and self.verdict.level == "alarm")

    @property
    def weighted_share(self) -> float:
        return self.verdict.weighted_share if self.verdict else 0.0

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "features": [f.as_dict() for f in self.features],
            "prediction": {
                "method": self.prediction_method,
                "threshold": self.prediction_threshold,
                "score": self.prediction_score,
                "drifted": self.prediction_drift,
            },
            "quality": self.quality,
        }
        if self.verdict is not None and self.calibration is not None:
            out["policy"] = {
                "level": self.verdict.level,
                "warnings": self.warnings,
                "weighted_share": self.verdict.weighted_share,
                "calibrated": self.calibration.calibrated,
                "top": self.calibration.top,
                "bounds": self.verdict.bounds.as_dict(),
                "calibration": {
                    "false_alarm_rate": self.calibration.policy.false_alarm_rate,
                    "warning_rate": self.calibration.policy.warning_rate,
                    **self.calibration.info,
                },
            }
        return out

    def summary(self) -> str:
        drifted = [
            f"{f.feature} ({f.method} {f.score:.3f} > {f.threshold:.3f})" for f in self.features if f.drifted
        ]
        q = self.quality
        quality = (
            f"live ROC AUC {q['roc_auc']:.3f} recall {q['recall']:.3f} on {q['n_labelled']} labels"
            if q.get("roc_auc") is not None
            else f"{q.get('n_labelled', 0)} labels"
        )
        warn = f"; drift warning: {'; '.join(self.warnings)}" if self.warnings else ""
        return (
            f"{self.n_current} records vs {self.n_reference} reference; drift share {self.drift_share:.2f} "
            f"({self.drifted_count}/{len(self.features)}{': ' + ', '.join(drifted) if drifted else ''}), "
            f"importance-weighted {self.weighted_share:.2f}; "
            f"score drift {self.prediction_method} {self.prediction_score:.3f} "
            f"({'drift' if self.prediction_drift else 'no drift'}){warn}; {quality}"
        )

    def policy_html(self) -> str:
        """The alarm policy's verdict and bounds as an HTML block (put at the top of the saved report)."""
        if self.verdict is None or self.calibration is None:
            return ""
        cal, b = self.calibration, self.verdict.bounds
        how = (
            f"calibrated at training time on {cal.info.get('bootstrap_windows')} resampled windows per size "
            f"(sizes {', '.join(str(n) for n in cal.policy.window_sizes)}; bounds for {self.n_current} "
            f"records interpolated): undrifted windows alarm at most {cal.policy.false_alarm_rate:.0%} "
            f"of the time, warn at most {cal.policy.warning_rate:.0%}"
            if cal.calibrated
            else "not calibrated (a champion trained before calibration): the monitor's static thresholds"
        )
        rows = "".join(
            f"<tr><td>{html.escape(f.feature)}</td><td>{f.importance:.3f}</td><td>{f.method}</td>"
            f"<td>{f.score:.3f}</td><td>{f.threshold:.3f}</td>"
            f"<td>{'' if f.warning_bound is None else f'{f.warning_bound:.3f}'}</td>"
            f"<td>{'' if f.alarm_bound is None else f'{f.alarm_bound:.3f}'}</td>"
            f"<td>{'drifted' if f.drifted else ''}</td></tr>"
            for f in sorted(self.features, key=lambda f: -f.importance)
        )
        rows += (
            f"<tr><td>score</td><td></td><td>{NUM_METHOD}</td><td>{self.prediction_score:.3f}</td><td></td>"
            f"<td>{b.warning.get(SCORE, float('nan')):.3f}</td><td>{self.prediction_threshold:.3f}</td>"
            f"<td>{'drift' if self.prediction_drift else ''}</td></tr>"
        )
        findings = "".join(f"<li>{f.level}: {html.escape(f.reason)}</li>" for f in self.verdict.findings)
        return (
            '<section style="font-family:sans-serif;margin:1em">'
            f"<h2>Drift policy: {self.verdict.level.upper()}</h2><ul>{findings or '<li>no bound crossed</li>'}</ul>"
            f"<p>Importance-weighted drift share {self.verdict.weighted_share:.2f} (warning past "
            f"{b.weighted_share['warning']:.2f}, alarm past {b.weighted_share['alarm']:.2f}); bounds {how}.</p>"
            "<table border=1 cellpadding=3><tr><th>feature</th><th>importance</th><th>method</th><th>distance</th>"
            "<th>drifted past</th><th>warning past</th><th>alarm past</th><th></th></tr>"
            f"{rows}</table></section>"
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
    calibration: Calibration | None = None,
    importance: dict[str, float] | None = None,
    summary_table: bool = True,
    report: bool = True,
) -> DriftResult:
    """`reference`: features + score (+ label); `current`: features + score (+ label from feedback, NaN when none).

    `calibration`: the bounds calibrated with the champion's training run; without one (a champion
    trained before calibration) the static thresholds of `drift` with the model's `importance`.
    `summary_table` adds Evidently's DataDriftPreset summary (the familiar drift table in the HTML report,
    ~5 s more); `report=False` skips Evidently (the figures and the verdict are the same).
    """
    if calibration is None:
        calibration = Calibration.static(
            config,
            DriftPolicy.from_mapping(config.drift),
            importance or {},
            num_threshold=drift.num_threshold,
            cat_threshold=drift.cat_threshold,
            score_threshold=drift.prediction_threshold,
            share_threshold=drift.share_threshold,
        )
    ref = _evidently_frame(reference, config)
    cur = _evidently_frame(current, config)
    scores = window_scores(reference, current, config)
    verdict = judge(scores, calibration, len(cur))
    bounds = verdict.bounds
    snapshot = _report(ref, cur, config, bounds, summary_table) if report else None

    features: list[FeatureDrift] = []
    reasons: list[str] = verdict.reasons("alarm")
    kinds: list[str] = verdict.kinds("alarm")
    drifted = set(verdict.drifted)
    for feature in config.features:
        name = feature.name
        miss_cur = float(cur[name].isna().mean()) if len(cur) else 0.0
        miss_ref = float(ref[name].isna().mean()) if len(ref) else 0.0
        unseen = 0.0
        if feature.type == "categorical":
            known = set(ref[name].dropna().unique()) | set(feature.categories)
            present = cur[name].dropna()
            unseen = float((~present.isin(known)).mean()) if len(present) else 0.0
        features.append(
            FeatureDrift(
                name,
                feature.type,
                calibration.methods.get(name, NUM_METHOD if feature.type == "numeric" else CAT_METHOD),
                bounds.drifted[name],
                scores.get(name, float("nan")),
                name in drifted,
                miss_cur,
                miss_ref,
                unseen,
                importance=calibration.importance.get(name, 0.0),
                alarm_bound=bounds.alarm.get(name),
                warning_bound=bounds.warning.get(name),
            )
        )
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

    pscore = scores.get(SCORE, float("nan"))
    pbound = bounds.alarm.get(SCORE, float("nan"))
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
        verdict.share,
        len(verdict.drifted),
        NUM_METHOD,
        pbound,
        pscore,
        "prediction_drift" in verdict.kinds("alarm"),
        q,
        reasons,
        kinds,
        snapshot,
        verdict,
        calibration,
    )


def _report(ref: pd.DataFrame, cur: pd.DataFrame, config: DatasetConfig, bounds, summary_table: bool):
    """Evidently's report of the window: one ValueDrift per column with its method and `drifted` bound,
    the score's with its alarm bound, and the drifted-column count (or the DataDriftPreset table)."""
    kinds = {f.name: f.type for f in config.features}
    method = {n: NUM_METHOD if k == "numeric" else CAT_METHOD for n, k in kinds.items()}
    # A column with no value left in the window cannot be tested for distribution drift: it is
    # judged by the missing-share check alone.
    testable = [n for n in config.feature_names if cur[n].notna().sum() > 0 and ref[n].notna().sum() > 0]
    score_metric = ValueDrift(column=SCORE, method=NUM_METHOD, threshold=bounds.alarm.get(SCORE, 0.2))
    per_column = [ValueDrift(column=c, method=method[c], threshold=bounds.drifted[c]) for c in testable]
    column_tests = dict(
        columns=testable,
        num_method=NUM_METHOD,
        cat_method=CAT_METHOD,
        per_column_threshold={c: bounds.drifted[c] for c in testable},
    )
    if summary_table:  # the preset holds the per-column ValueDrift metrics itself
        metrics: list = [DataDriftPreset(**column_tests), score_metric]
    else:
        metrics = [DriftedColumnsCount(**column_tests), *per_column, score_metric]
    definition = data_definition(config)
    return Report(metrics).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
