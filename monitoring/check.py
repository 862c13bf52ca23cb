"""One monitoring check (`run_check`; `python -m monitoring.monitor run`), and what it looks at: the
champion, the window of its recent predictions, the new data since it was trained.

A check:
1. finds the champion in the registry and loads the reference sample logged with its training run
   (`reference/reference.parquet`: valid-split features, label and out-of-sample score; for a retrained
   champion `reference/production.parquet`, the production window it was retrained for, named by its
   `reference_artifact` tag) and its threshold;
2. reads the window: the most recent MONITOR_WINDOW_SIZE predictions served by that version within
   MONITOR_WINDOW_MINUTES, with their feedback labels where they came back;
3. checks for new data since the champion was trained (labelled records, a changed source: the data
   set config's `retrain:` bounds; see check_freshness), which raises a retrain even when step 4 does
   not run; below MONITOR_MIN_WINDOW records it records a `skipped` run with the reason and stops;
4. otherwise computes drift and live quality (monitoring.drift), saves Evidently's HTML report to the
   reports store, and when a threshold is crossed calls the retrain trigger (cooldown and dedupe apply).

Its result is a `CheckOutcome`; `run_check` writes it, in one place, to the check's `monitoring_runs`
row (`CheckOutcome.row`) and to the Prometheus gauges (`_export`), whether the check ran or failed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow.exceptions import MlflowException

from core import registry, retention, store
from core.dataset import DatasetConfig, load_config
from core.drift import LEVELS, Calibration
from core.estimate import METRICS as ESTIMATED
from core.estimate import (
    CalibrationMap,
    PerformanceEstimate,
    estimate_performance,
    fit_calibration_map,
)
from core.newdata import NewRows, new_rows
from core.snapshot import cached_frame, champion_snapshot
from core.source import DataError, source_hash
from monitoring import cohorts, metrics, reports
from monitoring.drift import DriftResult, compute_drift
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger, TriggerEvent, trigger_kinds

log = logging.getLogger("monitoring.check")


@dataclass
class Champion:
    name: str
    version: str
    run_id: str
    threshold: float
    trained_at: datetime | None = None  # the model version's creation time
    source_hash: str | None = None  # the hash of the source snapshot its data descends from
    reference: str = registry.REFERENCE_ARTIFACT  # its drift reference's artifact path
    data_hash: str | None = None  # the snapshot it was trained on (the new-data count's base)


@dataclass
class Freshness:
    """New data since the champion was trained: labelled records, and whether the source changed."""

    new_labels: int | None = None  # labelled records since the champion was trained (None: not checked)
    new_rows: int | None = None  # of these, the rows a retrain would add (None: not counted)
    left_out: dict[str, int] = field(default_factory=dict)  # the others, by reason (core.newdata)
    label_bound: int = 0
    source_hash: str | None = None  # the source's hash now (None: not checked)
    champion_source_hash: str | None = None
    data_age_seconds: float | None = None
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        return {
            "new_labels": self.new_labels,
            "new_rows": self.new_rows,
            "source_hash": self.source_hash,
            "champion_source_hash": self.champion_source_hash,
        }

    @property
    def countable(self) -> int | None:
        """What the `retrain.new_labels` bound is judged on: the rows a retrain would add, or every
        labelled record when those could not be counted."""
        return self.new_rows if self.new_rows is not None else self.new_labels

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.figures(),
            "left_out": self.left_out,
            "label_bound": self.label_bound,
            "data_age_seconds": self.data_age_seconds,
            "reasons": self.reasons,
            "error": self.error,
        }


@dataclass
class Harm:
    """Quality lost by the window as estimated without labels: each estimated metric against the
    champion's own estimate on its reference (same method, same calibration map), judged by the data set
    config's `estimate.max_drop`."""

    baseline: dict[str, float]
    values: dict[str, float]
    bounds: dict[str, float]
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    @property
    def drops(self) -> dict[str, float]:
        return {m: self.baseline[m] - v for m, v in self.values.items() if m in self.baseline}

    def figures(self) -> dict[str, Any]:
        return {f"estimated_{m}": v for m, v in self.values.items()} | {
            f"estimated_{m}_drop": d for m, d in self.drops.items()
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "drop": self.drops,
            "max_drop": self.bounds,
            "alarm": bool(self.kinds),
            "reasons": self.reasons,
        }


def estimated_harm(
    estimate: PerformanceEstimate, baseline: dict[str, float], bounds: dict[str, float], version: str
) -> Harm:
    """An alarm per metric whose estimate fell below the reference's by more than its bound (kind
    `estimated_drop:<metric>`); a metric without a bound, or not estimable, is reported, not judged."""
    values = {m: estimate[m].value for m in ESTIMATED if not np.isnan(estimate[m].value)}
    base = {m: v for m, v in baseline.items() if not np.isnan(v)}
    harm = Harm(base, values, dict(bounds))
    for metric, bound in bounds.items():
        if metric not in values or metric not in base:
            continue
        drop = base[metric] - values[metric]
        if drop > bound:
            e = estimate[metric]
            harm.kinds.append(f"estimated_drop:{metric}")
            harm.reasons.append(
                f"estimated {metric} {values[metric]:.3f} (95% band {e.low:.3f}-{e.high:.3f}, no labels) is "
                f"{drop:.3f} below v{version}'s {base[metric]:.3f} on its reference "
                f"(estimate.max_drop.{metric} {bound:g})"
            )
    return harm


@dataclass(frozen=True)
class CheckOutcome:
    """What one check found; `row()` is its `monitoring_runs` row."""

    run_id: int
    status: str  # ok | drift | skipped | error
    reason: str
    version: str | None = None  # the champion checked (None: none, or the check failed first)
    window: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    freshness: Freshness | None = None
    result: DriftResult | None = None  # None: no drift judged (skipped, error)
    report_uri: str | None = None
    trigger: TriggerEvent | None = None
    estimate: PerformanceEstimate | None = None  # quality estimated without labels (None: not judged)
    harm: Harm | None = None  # the estimate judged against the reference's (None: not judged)
    warning: str | None = None  # why a drift alarm was kept a warning (estimate.drift_needs_harm)
    cohort: Cohort | None = None  # the drifted cohort whose labels a retrain waits for (or just got)
    scored: tuple[datetime, datetime] | None = None  # the window's event times: first and last (business)

    @property
    def alarmed(self) -> bool:
        """The check alarmed: the drift policy or live quality (unless kept a warning), or estimated harm."""
        drift = self.result is not None and self.result.alarm and self.warning is None
        return drift or bool(self.harm and self.harm.kinds)

    def line(self) -> str:
        out = f"monitoring run {self.run_id}: {self.status.upper()}"
        if self.version:
            out += f" (champion v{self.version}, window {self.window})"
        out += f": {self.reason}"
        if self.report_uri:
            out += f"\n  report: {self.report_uri}"
        if self.trigger is not None:
            out += (
                f"\n  retrain trigger: {self.trigger.status} ({self.trigger.backend}) {self.trigger.detail}"
            )
        return out

    def row(self) -> dict[str, Any]:
        """The `monitoring_runs` columns of this outcome (all but id, started_at and finished_at)."""
        row: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.version is not None:
            row.update(
                model_version=self.version,
                window_size=self.window,
                window_start=self.window_start,
                window_end=self.window_end,
            )
        details: dict[str, Any] = {}
        r = self.result
        if r is not None:
            q = r.quality
            row.update(
                reference_size=r.n_reference,
                drift_share=r.drift_share,
                drifted_features=r.drifted_count,
                n_features=len(r.features),
                dataset_drift=r.dataset_drift,
                prediction_drift_score=None if np.isnan(r.prediction_score) else r.prediction_score,
                prediction_drift=r.prediction_drift,
                n_labelled=q.get("n_labelled"),
                roc_auc=q.get("roc_auc"),
                precision=q.get("precision"),
                recall=q.get("recall"),
                f1=q.get("f1"),
                alarm=self.alarmed,
                alarm_reasons=r.reasons + (self.harm.reasons if self.harm else []),
                report_uri=self.report_uri,
            )
            details.update(r.details())
        if self.freshness is not None:
            details["freshness"] = self.freshness.as_dict()
        if self.estimate is not None:
            details["estimate"] = self.estimate.as_dict()
        if self.harm is not None:
            details["harm"] = self.harm.as_dict()
        if self.warning is not None:
            details["warning"] = self.warning
        if self.cohort is not None:
            details["cohort"] = self.cohort.as_dict()
        if self.scored is not None:
            details["scored"] = {"from": self.scored[0].isoformat(), "to": self.scored[1].isoformat()}
        if details:
            row["details"] = _clean(details)
        if self.trigger is not None:
            row["trigger_event_id"] = self.trigger.id
        return row


def champion(settings: MonitorSettings) -> Champion | None:
    mv = registry.version_by_alias(settings.model_name, registry.CHAMPION)
    if mv is None:
        return None
    threshold = mv.tags.get("threshold")
    if threshold is None:
        threshold = registry.model_metadata(settings.model_name, mv.version)["threshold"]
    created = getattr(mv, "creation_timestamp", None)
    return Champion(
        settings.model_name,
        str(mv.version),
        mv.run_id,
        float(threshold),
        trained_at=datetime.fromtimestamp(created / 1000, UTC) if created else None,
        # champions trained before `source_hash` was tagged: their data_hash (the ingested snapshot
        # for a first training; a retrained one then reads as changed once, see docs/monitoring.md)
        source_hash=mv.tags.get("source_hash") or mv.tags.get("data_hash") or None,
        reference=registry.reference_artifact(mv.tags),
        data_hash=mv.tags.get("data_hash") or None,
    )


WAITING = "waiting_labels"


def waiting_for_labels(config: DatasetConfig, window: pd.DataFrame, kinds: list[str]) -> str | None:
    """Why an alarm does not start a retrain yet, or None. A drift or quality alarm comes as soon as the
    predictions do, but a retrain learns from their labels, which come back later: it waits until
    `retrain.min_labels` records of the checked window have their label. New data (enough new labels, a
    changed source) never waits."""
    need = config.retrain_min_labels
    if need <= 0 or any(k == "new_labels" or k.startswith("source_changed") for k in kinds):
        return None
    have = int(window["label"].notna().sum()) if "label" in window else 0
    if have >= need:
        return None
    return (
        f"waiting for labels: {have} of the {len(window)} checked records have their label, "
        f"retrain.min_labels {need}; a later check starts the retrain once these records have theirs"
    )


@dataclass
class Cohort:
    """A drift or quality alarm waiting for the labels of its own window (the drifted cohort): its
    `waiting_labels` event, its monitoring run, and how many of that run's records have their label."""

    event_id: int
    run_id: int
    window_start: datetime | None
    window_end: datetime | None
    size: int
    have: int
    need: int
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    fired: bool = False  # this check started its retrain
    scored: tuple[datetime, datetime] | None = None  # its records' first and last event time
    horizon_days: float = 0.0  # labels.horizon_days: when its labels are due

    @property
    def ready(self) -> bool:
        return self.have >= self.need

    @property
    def span(self) -> str:
        if self.scored is not None:
            return f"scored {self.scored[0]:%Y-%m-%d %H:%M}Z to {self.scored[1]:%Y-%m-%d %H:%M}Z"
        if self.window_start is None or self.window_end is None:
            return "no window"
        return f"{self.window_start:%Y-%m-%d %H:%M}Z to {self.window_end:%Y-%m-%d %H:%M}Z"

    def waiting(self) -> str:
        out = (
            f"waiting for labels of run {self.run_id}'s cohort: {self.have} of {self.size}, "
            f"need {self.need} (retrain.min_labels)"
        )
        if self.scored is not None and self.horizon_days > 0:
            due = self.scored[0] + timedelta(days=self.horizon_days)
            out += f"; its first labels are due {due:%Y-%m-%d} (labels.horizon_days {self.horizon_days:g})"
        return out

    def labelled(self) -> str:
        return (
            f"the drifted cohort is labelled: {self.have} of the {self.size} records of monitoring run "
            f"{self.run_id} ({self.span}) have their label (retrain.min_labels {self.need})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "run_id": self.run_id,
            "window_start": None if self.window_start is None else self.window_start.isoformat(),
            "window_end": None if self.window_end is None else self.window_end.isoformat(),
            "records": self.size,
            "labelled": self.have,
            "need": self.need,
            "kinds": self.kinds,
            "fired": self.fired,
            "scored": None if self.scored is None else [t.isoformat() for t in self.scored],
        }


def _waits(engine: sa.Engine, model_name: str, version: str) -> list[Any]:
    """The oldest and the newest `waiting_labels` event of the monitor for `version`'s windows still
    pending: no retrain fired after it and the champion did not move since."""
    t, r = store.trigger_events, store.monitoring_runs
    with engine.connect() as conn:
        last_fired = conn.execute(sa.select(sa.func.max(t.c.id)).where(t.c.status == "fired")).scalar()
        move = store.last_champion_move(engine, model_name)
        query = (
            sa.select(t.c.id, t.c.monitoring_run_id, t.c.parameters, r.c.window_start, r.c.window_end)
            .select_from(t.join(r, r.c.id == t.c.monitoring_run_id))
            .where(
                t.c.status == WAITING,
                t.c.id > (last_fired or 0),
                r.c.model_name == model_name,
                r.c.model_version == str(version),
            )
        )
        if move is not None:
            query = query.where(t.c.created_at >= move["at"])
        newest = conn.execute(query.order_by(t.c.id.desc()).limit(1)).first()
        oldest = conn.execute(query.order_by(t.c.id).limit(1)).first()
    return [w for w in (newest, oldest) if w is not None][: 1 if newest == oldest else 2]


def pending_cohort(
    engine: sa.Engine, model_name: str, version: str, need: int, horizon_days: float = 0.0
) -> Cohort | None:
    """The drifted cohort a retrain waits for, with the labels that have come back for its records
    (`store.run_window`: the records its monitoring run judged), or None when no alarm waits.

    A later check looks at a later window, whose records have no labels yet either: the wait is kept
    with the alarm's own run, so it fires once *that* window is labelled. Of the pending waits of the
    champion (since the last fired retrain and the last champion move) the newest and the oldest are
    counted (two windows read, however long the wait): the newest when it is ready, else the oldest
    when it is, else the newest, still waiting."""
    found = []
    for wait in _waits(engine, model_name, version):
        window = store.run_window(engine, int(wait.monitoring_run_id))
        if window is None:
            continue
        params = wait.parameters if isinstance(wait.parameters, dict) else {}
        found.append(
            Cohort(
                event_id=int(wait.id),
                run_id=int(wait.monitoring_run_id),
                window_start=store.as_utc(wait.window_start),
                window_end=store.as_utc(wait.window_end),
                size=len(window),
                have=int(window["label"].notna().sum()) if "label" in window else 0,
                need=max(0, int(need)),
                reasons=list(params.get("reasons") or []),
                kinds=list(params.get("kinds") or []),
                figures=dict(params.get("figures") or {}),
                scored=cohorts.event_span(window),
                horizon_days=horizon_days,
            )
        )
    return next((c for c in found if c.ready), found[0] if found else None)


def drift_without_harm(config: DatasetConfig, result: DriftResult, harm: Harm) -> str | None:
    """With `estimate.drift_needs_harm`: why a drift alarm stays a warning (no estimated metric dropped
    past its bound, and no live-quality floor crossed: a shift the model takes in its stride), or None."""
    if not (config.drift_needs_harm and result.alarm) or harm.kinds:
        return None
    if any(k.startswith("quality:") for k in result.kinds):
        return None
    drops = ", ".join(f"{m} {d:+.3f}" for m, d in sorted(harm.drops.items()) if m in harm.bounds)
    return (
        f"drift without estimated harm, a warning (estimate.drift_needs_harm): {'; '.join(result.reasons)}; "
        f"estimated drops within their bounds ({drops or 'none estimable'}); no retrain"
    )


def check_freshness(
    settings: MonitorSettings,
    config: DatasetConfig,
    champ: Champion,
    engine: sa.Engine,
    now=None,
    label_bound: int | None = None,
) -> Freshness:
    """Has new data arrived since the champion was trained? Bounds from the data set config's `retrain:`
    (new_labels: N labelled production records since then that a retrain would add, see
    `count_new_rows`; on_source_change: the source's content differs from the champion's source
    snapshot)."""
    now = store.as_utc(now) if now is not None else store.utcnow()
    bound = config.retrain_new_labels if label_bound is None else label_bound
    out = Freshness(label_bound=bound, champion_source_hash=champ.source_hash)
    if champ.trained_at is not None:
        out.data_age_seconds = max(0.0, (now - champ.trained_at).total_seconds())
        out.new_labels = store.labelled_since(engine, settings.model_name, champ.trained_at)
        if out.label_bound > 0 and out.new_labels > 0:
            try:
                added = count_new_rows(settings, config, champ, engine)
                out.new_rows, out.left_out = added.added, added.left_out
            except DataError as exc:
                out.error = f"new data counted as every labelled record: {exc}"[:500]
                log.warning("freshness: %s", out.error)
        if out.label_bound > 0 and (out.countable or 0) >= out.label_bound:
            out.kinds.append("new_labels")
            out.reasons.append(_new_data_reason(out, champ.version))
    if config.retrain_on_source_change and champ.source_hash:
        try:
            out.source_hash = source_hash(config)
        except DataError as exc:
            out.error = "; ".join(filter(None, [out.error, f"source not readable: {exc}"]))[:500]
            log.warning("freshness: %s", out.error)
        if out.source_hash and out.source_hash != champ.source_hash:
            # the new hash in the kind: each distinct change of the source fires once
            out.kinds.append(f"source_changed:{out.source_hash[:12]}")
            out.reasons.append(
                f"new data: the source changed (now {out.source_hash[:12]}, v{champ.version} was trained "
                f"on {champ.source_hash[:12]})"
            )
    return out


def count_new_rows(
    settings: MonitorSettings, config: DatasetConfig, champ: Champion, engine: sa.Engine
) -> NewRows:
    """The rows a retrain would add from the records labelled since the champion was trained, by the
    retrain's own rules (core.newdata: schema, duplicates, missing shares), against the snapshot the
    champion was trained on (its `data_hash`: the retrain's base plus the production rows earlier
    retrains added, so a record the champion already learned from is no new data; the latest snapshot
    when untagged). The snapshot is read once per process; the records are those `labelled_since`
    counts. DataError when the snapshot cannot be read."""
    snapshot = champion_snapshot(champ.data_hash, config, settings.data_dir)
    base = cached_frame(snapshot)
    records = store.labelled_predictions(engine, model_name=settings.model_name, since=champ.trained_at)
    try:
        return new_rows(records, base, config)
    except KeyError as exc:  # a snapshot of another data set (columns the config does not have)
        raise DataError(f"snapshot {snapshot.hash[:16]} lacks column {exc}") from exc


def _new_data_reason(fresh: Freshness, version: str) -> str:
    bound = f"(retrain.new_labels {fresh.label_bound})"
    if fresh.new_rows is None:
        return f"new data: {fresh.new_labels} labelled records since v{version} was trained {bound}"
    others = "; ".join(f"{n} {why}" for why, n in fresh.left_out.items() if n)
    return (
        f"new data: {fresh.new_rows} new labelled records a retrain would add (of {fresh.new_labels} "
        f"labelled since v{version} was trained{'; ' + others if others else ''}) {bound}"
    )


@lru_cache(maxsize=8)
def reference_of(run_id: str, artifact: str = registry.REFERENCE_ARTIFACT) -> pd.DataFrame:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    return pd.read_parquet(path)


@lru_cache(maxsize=8)
def calibration_of(run_id: str) -> Calibration | None:
    """The drift bounds calibrated with the champion's training run (None: trained before calibration)."""
    raw = registry.drift_calibration(run_id)
    return Calibration.from_dict(raw) if raw else None


MIN_CALIBRATION_LABELS = 200  # labelled reference records below which no calibration map is fitted


def calibration_map(reference: pd.DataFrame) -> CalibrationMap | None:
    """The isotonic map from the champion's scores to calibrated probabilities, fitted on its labelled
    reference records (NannyML's CBPE calibrates on its reference data the same way); None when the
    reference has fewer than MIN_CALIBRATION_LABELS labelled records or one class."""
    if "label" not in reference or "score" not in reference:
        return None
    known = reference[reference["label"].notna()]
    if len(known) < MIN_CALIBRATION_LABELS or known["label"].nunique() < 2:
        return None
    return fit_calibration_map(known["label"].astype(int).to_numpy(), known["score"].to_numpy(float))


@lru_cache(maxsize=8)
def calibration_map_of(run_id: str, artifact: str = registry.REFERENCE_ARTIFACT) -> CalibrationMap | None:
    return calibration_map(reference_of(run_id, artifact))


def estimate_window(window: pd.DataFrame, threshold: float, mapping: CalibrationMap | None):
    """The window's ROC AUC, recall and precision estimated from its scores alone (core.estimate: CBPE),
    the scores read as probabilities through the reference's calibration map when there is one."""
    scores = window["score"].to_numpy(float)
    estimate = estimate_performance(scores, threshold, None if mapping is None else mapping(scores))
    estimate.extra["calibration"] = "isotonic map on the reference" if mapping is not None else "none"
    return estimate


@lru_cache(maxsize=8)
def baseline_of(run_id: str, artifact: str, threshold: float) -> dict[str, float]:
    """The champion's quality estimated the same way on its own reference sample: what a window's
    estimate is compared with (the method's bias cancels; no labels needed, a production reference
    has few)."""
    reference = reference_of(run_id, artifact)
    estimate = estimate_window(reference, threshold, calibration_map_of(run_id, artifact))
    return {m: estimate[m].value for m in ESTIMATED}


def importance_of(champ: Champion) -> dict[str, float]:
    """The champion's feature importance (model metadata), for a champion without calibrated bounds."""
    try:
        return registry.model_metadata(champ.name, champ.version).get("feature_importance") or {}
    except (MlflowException, OSError) as exc:
        log.warning("no feature importance for v%s (%s): features weigh alike", champ.version, exc)
        return {}


def read_window(
    engine: sa.Engine, model_name: str, version: str, size: int, minutes: float, now=None
) -> pd.DataFrame:
    """The most recent predictions of `version` (at most `size`, within `minutes`), with feedback labels."""
    return store.recent_predictions(engine, model_name, version, size, minutes, now)


def _figures(result: DriftResult) -> dict[str, Any]:
    return {
        "drift_share": result.drift_share,
        "drifted_features": [f.feature for f in result.features if f.drifted],
        "prediction_drift_score": result.prediction_score,
        "roc_auc": result.quality.get("roc_auc"),
        "recall": result.quality.get("recall"),
    }


def _export(settings: MonitorSettings, outcome: CheckOutcome) -> None:
    """The Prometheus gauges of one check."""
    name = settings.model_name
    metrics.record_status(name, outcome.status)
    metrics.last_run.labels(name).set(time.time())
    metrics.window.labels(name).set(outcome.window)
    if outcome.version:
        metrics.model_version.clear()
        metrics.model_version.labels(name, outcome.version).set(1)
    f = outcome.freshness
    if f is not None:
        if f.new_labels is not None:
            metrics.labels_since_training.labels(name).set(f.new_labels)
        if f.new_rows is not None:
            metrics.new_rows_since_training.labels(name).set(f.new_rows)
        if f.data_age_seconds is not None:
            metrics.champion_data_age.labels(name).set(f.data_age_seconds)
        if f.source_hash is not None:
            metrics.source_changed.labels(name).set(int(f.source_hash != f.champion_source_hash))
    metrics.waiting_cohort.clear()
    c = outcome.cohort
    if c is not None and not c.fired:
        for figure, value in (("labelled", c.have), ("need", c.need), ("records", c.size)):
            metrics.waiting_cohort.labels(name, figure).set(value)
    r = outcome.result
    if r is None:
        return
    metrics.drift_share.labels(name).set(r.drift_share)
    metrics.drifted_features.labels(name).set(r.drifted_count)
    metrics.weighted_drift_share.labels(name).set(r.weighted_share)
    metrics.drift_level.labels(name).set(LEVELS.index("warning" if outcome.warning else r.level))
    metrics.feature_drift.clear()
    for f in r.features:
        if not np.isnan(f.score):
            metrics.feature_drift.labels(name, f.feature, f.method, f"{f.threshold:.4g}").set(f.score)
        metrics.feature_drifted.labels(name, f.feature).set(int(f.drifted))
    metrics.prediction_drift.clear()
    if not np.isnan(r.prediction_score):
        metrics.prediction_drift.labels(name, r.prediction_method, f"{r.prediction_threshold:.4g}").set(
            r.prediction_score
        )
    metrics.alarm.labels(name).set(int(outcome.alarmed))
    metrics.labelled.labels(name).set(int(r.quality.get("n_labelled") or 0))
    e = outcome.estimate
    if e is not None:
        for key in ESTIMATED:
            for bound in ("value", "low", "high"):
                value = getattr(e[key], bound)
                if not np.isnan(value):
                    metrics.estimated_quality.labels(name, key, bound).set(value)
    h = outcome.harm
    if h is not None:
        metrics.estimated_harm.labels(name).set(int(bool(h.kinds)))
        metrics.estimated_drop.clear()
        for key, drop in h.drops.items():
            metrics.estimated_drop.labels(name, key).set(drop)
    for key in ("roc_auc", "precision", "recall", "f1"):
        value = r.quality.get(key)
        if value is not None:
            metrics.quality.labels(name, key).set(value)


def _clean(value: Any) -> Any:
    """JSON-safe (NaN -> None) for the details column."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and (np.isnan(value) or np.isinf(value)):
        return None
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _fire(
    settings: MonitorSettings,
    trigger: RetrainTrigger | None,
    champ: Champion,
    run_id: int,
    reasons: list[str],
    kinds: list[str],
    figures: dict[str, Any],
    waiting: str | None = None,
) -> TriggerEvent:
    """One retrain trigger for everything this check found (cooldown and dedupe apply); with `waiting`
    (an alarm without the labels to learn from, see `waiting_for_labels`) a `waiting_labels` row and no
    retrain: it keeps the check's run, reasons, kinds and figures, and a later check fires once that
    run's records are labelled (`pending_cohort`)."""
    trigger = trigger or RetrainTrigger(settings)
    if waiting:
        event = trigger.note(
            "; ".join(reasons) + f" -- {waiting}",
            source="monitor",
            status=WAITING,
            monitoring_run_id=run_id,
            parameters={"reasons": reasons, "kinds": kinds, "figures": _clean(figures)},
        )
        metrics.triggers.labels(settings.model_name, event.backend, WAITING, "monitor").inc()
        return event
    # the dedupe key names what crossed (not its figures), so the same drift or the same new data seen
    # on every run within the dedupe window fires once
    key = f"monitor:{settings.model_name}:v{champ.version}:" + ",".join(kinds)
    event = trigger.fire(
        "; ".join(reasons),
        source="monitor",
        dedupe_key=key,
        monitoring_run_id=run_id,
        figures={**figures, "trigger_kinds": trigger_kinds(kinds)},
    )
    metrics.triggers.labels(settings.model_name, event.backend, event.status, "monitor").inc()
    return event


def _save_report(settings: MonitorSettings, result: DriftResult, run_id: int, started: datetime) -> str:
    """Evidently's HTML report with the drift policy's section, in the reports store; its URI."""
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        result.report.save_html(str(html))
        name = f"{settings.model_name}-run{run_id:06d}-{started:%Y%m%dT%H%M%SZ}.html"
        page = reports.with_section(html.read_bytes(), result.policy_html())
        return reports.save(settings, name, page)


def _check(
    settings: MonitorSettings,
    config: DatasetConfig,
    engine: sa.Engine,
    run_id: int,
    started: datetime,
    trigger: RetrainTrigger | None,
    summary_table: bool,
    now,
) -> CheckOutcome:
    """Steps 1-4 of the module docstring; raises what goes wrong (run_check records it)."""
    registry.connect(settings.tracking_uri)
    champ = champion(settings)
    if champ is None:
        return CheckOutcome(run_id, "skipped", f"model '{settings.model_name}' has no champion yet")
    window = read_window(
        engine, settings.model_name, champ.version, settings.window_size, settings.window_minutes, now
    )
    fresh = check_freshness(settings, config, champ, engine, now)
    seen = CheckOutcome(
        run_id,
        "skipped",
        "",
        version=champ.version,
        window=len(window),
        window_start=window["created_at"].min() if len(window) else None,
        window_end=window["created_at"].max() if len(window) else None,
        freshness=fresh,
        scored=cohorts.event_span(window),
    )
    if len(window) < settings.min_window:
        span = f"the last {settings.window_minutes:g} min" if settings.window_minutes > 0 else "all time"
        reason = (
            f"window too small: {len(window)} predictions by v{champ.version} in {span}, "
            f"minimum {settings.min_window} (MONITOR_MIN_WINDOW); no drift judged"
        )
        if fresh.reasons:
            reason += " -- " + "; ".join(fresh.reasons)
        event, cohort = _trigger(
            settings, config, engine, trigger, champ, run_id, fresh.reasons, fresh.kinds, fresh.figures()
        )
        return replace(seen, reason=reason + _cohort_reason(cohort), trigger=event, cohort=cohort)

    calibration = calibration_of(champ.run_id)
    reference = reference_of(champ.run_id, champ.reference)
    estimate = estimate_window(window, champ.threshold, calibration_map_of(champ.run_id, champ.reference))
    harm = estimated_harm(
        estimate,
        baseline_of(champ.run_id, champ.reference, champ.threshold),
        config.estimate_max_drop,
        champ.version,
    )
    result = compute_drift(
        reference,
        window,
        config,
        settings.drift,
        settings.quality,
        champ.threshold,
        calibration=calibration,
        importance=None if calibration else importance_of(champ),
        summary_table=summary_table,
    )
    warning = drift_without_harm(config, result, harm)
    alarm_reasons = (result.reasons if result.alarm and not warning else []) + harm.reasons
    alarm_kinds = (sorted(result.kinds) if result.alarm and not warning else []) + harm.kinds
    reason = (
        ("; ".join(alarm_reasons) if alarm_reasons else warning or "no threshold crossed")
        + " -- "
        + result.summary()
        + ("" if not fresh.reasons else " -- " + "; ".join(fresh.reasons))
    )
    judged = replace(
        seen,
        status="drift" if result.alarm or harm.kinds else "ok",
        reason=reason,
        result=result,
        report_uri=_save_report(settings, result, run_id, started),
        estimate=estimate,
        harm=harm,
        warning=warning,
    )
    # drift, estimated harm and new data seen by the same check: one trigger naming them all
    reasons = alarm_reasons + fresh.reasons
    kinds = alarm_kinds + fresh.kinds
    figures = {**_figures(result), **harm.figures(), **fresh.figures()}
    waiting = waiting_for_labels(config, window, kinds) if reasons else None
    event, cohort = _trigger(
        settings, config, engine, trigger, champ, run_id, reasons, kinds, figures, waiting
    )
    if cohort is None and event is not None and event.status == WAITING:  # this window is the cohort
        cohort = Cohort(
            event.id,
            run_id,
            judged.window_start,
            judged.window_end,
            len(window),
            int(window["label"].notna().sum()) if "label" in window else 0,
            config.retrain_min_labels,
            reasons,
            kinds,
            scored=judged.scored,
            horizon_days=config.label_horizon_days,
        )
        return replace(judged, trigger=event, cohort=cohort)
    return replace(judged, reason=judged.reason + _cohort_reason(cohort), trigger=event, cohort=cohort)


def _trigger(
    settings: MonitorSettings,
    config: DatasetConfig,
    engine: sa.Engine,
    trigger: RetrainTrigger | None,
    champ: Champion,
    run_id: int,
    reasons: list[str],
    kinds: list[str],
    figures: dict[str, Any],
    waiting: str | None = None,
) -> tuple[TriggerEvent | None, Cohort | None]:
    """The check's trigger and the drifted cohort it waited for. What this check found fires as it is
    (a retrain; a `waiting_labels` row with `waiting`). Unless it fired a retrain, the pending cohort
    (`pending_cohort`) is counted, and when its records are labelled its retrain fires first, with the
    original alarm's reasons and kinds and its monitoring run (the window the retrain is for)."""
    if reasons and not waiting:
        return _fire(settings, trigger, champ, run_id, reasons, kinds, figures), None
    cohort = pending_cohort(
        engine, settings.model_name, champ.version, config.retrain_min_labels, config.label_horizon_days
    )
    event = None
    if cohort is not None and cohort.ready and cohort.reasons:
        event = _fire(
            settings,
            trigger,
            champ,
            cohort.run_id,
            [*cohort.reasons, cohort.labelled()],
            cohort.kinds,
            {**cohort.figures, "cohort_run_id": cohort.run_id, "cohort_labels": cohort.have},
        )
        cohort.fired = event.fired
    if reasons:  # this check's own alarm waits too: kept after the cohort's retrain, so it stays pending
        noted = _fire(settings, trigger, champ, run_id, reasons, kinds, figures, waiting)
        event = event or noted
    return event, cohort


def _cohort_reason(cohort: Cohort | None) -> str:
    if cohort is None:
        return ""
    if cohort.fired:
        return f" -- retrain for run {cohort.run_id}'s cohort: {cohort.labelled()}"
    if cohort.ready:
        return f" -- run {cohort.run_id}'s cohort is labelled ({cohort.have} of {cohort.size}), retrain held"
    return " -- " + cohort.waiting()


def run_check(
    settings: MonitorSettings,
    config: DatasetConfig | None = None,
    *,
    trigger: RetrainTrigger | None = None,
    summary_table: bool = True,
    now=None,
) -> CheckOutcome:
    """One check. Its `monitoring_runs` row is opened first (`running`: a check that dies leaves it so)
    and closed here with the outcome, which also sets the gauges -- an `error` outcome (the exception's
    type and message) when the check raised."""
    config = config or load_config(settings.dataset_config)
    engine = store.engine_for(settings.database_url)
    runs = store.monitoring_runs
    started = store.utcnow()
    with engine.begin() as conn:
        run_id = conn.execute(
            runs.insert().values(
                started_at=started, status="running", model_name=settings.model_name, alarm=False
            )
        ).inserted_primary_key[0]
    try:
        outcome = _check(settings, config, engine, run_id, started, trigger, summary_table, now)
    except Exception as exc:
        log.exception("monitoring run %s failed", run_id)
        outcome = CheckOutcome(run_id, "error", f"{type(exc).__name__}: {exc}"[:2000])
    with engine.begin() as conn:
        conn.execute(
            runs.update().where(runs.c.id == run_id).values(finished_at=store.utcnow(), **outcome.row())
        )
    _export(settings, outcome)
    look_at_cohorts(settings, engine, now, config)
    return outcome


def look_at_cohorts(
    settings: MonitorSettings, engine: sa.Engine, now=None, config: DatasetConfig | None = None
) -> list[cohorts.Cohort]:
    """The cohorts' estimated and realized quality (monitoring.cohorts), logged and exported; a failure
    here is logged and costs the check nothing."""
    if settings.cohorts <= 0:
        return []
    try:
        found = cohorts.cohorts(
            engine,
            settings.model_name,
            settings.cohorts,
            settings.cohort_minutes,
            settings.quality_min_labelled,
            retention.archive_of(settings),
            now,
            None if config is None else config.labels,
        )
    except Exception:
        log.exception("cohorts: could not be read")
        return []
    cohorts.export(settings.model_name, found)
    for c in found:
        if c.realized:
            log.info("%s", c.line())
    return found
