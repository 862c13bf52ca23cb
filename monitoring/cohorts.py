"""Cohorts: what was estimated for a group of records when it was scored, beside what its labels say
once they arrive.

A cohort is the window one monitoring run judged: the champion's records scored in that period. At the
check, their quality was estimated without labels (CBPE, `monitoring.check.estimate_window`; stored in
the run's `details.estimate`). Churn labels come back weeks later, so each later check looks again at
one cohort per scoring period (MONITOR_COHORT_MINUTES, a day by default: the newest judged window of the
period) for the last MONITOR_COHORTS periods (past the label horizon): how many of their records now have a label, and, once at least
QUALITY_MIN_LABELLED have, the realized ROC AUC, recall and precision at the same threshold beside the
estimate. The difference (realized minus estimated) is the estimate's own error: CBPE assumes that
P(label | score) did not change, so a large error is the sign of concept shift, where estimates cannot
be trusted and only labels tell (docs/monitoring.md, "Cohorts").

Time is business time where the log has it: a cohort's period is that of its records' event time (the
`event_time` a client or the simulator sent; the time scored otherwise), and its labels are due the data
set config's `labels.horizon_days` after its records' event times. "Now" is the log's watermark (its
newest event time), so a replay or a simulated clock moves the cohorts' ages as it moves the data. A
cohort whose labels are due but missing beyond the share that never comes back (`labels.never_share`)
is overdue: the labels' feed is broken or late (gauge `monitor_labels_overdue_share`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from core import store
from core.estimate import METRICS
from monitoring import metrics
from monitoring.drift import live_quality

log = logging.getLogger(__name__)

JUDGED = ("ok", "drift")  # the statuses of a run that judged a window (and estimated it)


@dataclass
class Cohort:
    run_id: int
    version: str
    window_start: datetime
    window_end: datetime
    records: int
    labelled: int
    threshold: float | None
    estimated: dict[str, float] = field(default_factory=dict)  # at the check, no labels
    realized: dict[str, float] = field(default_factory=dict)  # from its labels (enough of them only)
    scored_from: datetime | None = None  # its records' first and last event time (business time)
    scored_to: datetime | None = None
    labels_due: float = 0.0  # share of its records whose label is due by the watermark (0 to 1)
    expected_labelled: float = 0.0  # labels_due net of labels.never_share: what should be in by now

    @property
    def overdue(self) -> float:
        """Labelled share missing against what should be in by now (0 when on time)."""
        return max(0.0, self.expected_labelled - self.labelled_share)

    @property
    def error(self) -> dict[str, float]:
        """Realized minus estimated, per metric both have (negative: the estimate was too hopeful)."""
        return {
            m: self.realized[m] - self.estimated[m]
            for m in METRICS
            if m in self.realized and m in self.estimated
        }

    @property
    def labelled_share(self) -> float:
        return self.labelled / self.records if self.records else 0.0

    def line(self) -> str:
        est = ", ".join(f"{m} {v:.3f}" for m, v in self.estimated.items()) or "none"
        first, last = self.scored_from or self.window_start, self.scored_to or self.window_end
        out = (
            f"cohort of run {self.run_id} (v{self.version}, scored {first:%Y-%m-%d %H:%M} to "
            f"{last:%Y-%m-%d %H:%M}): {self.labelled} of {self.records} labelled "
            f"({self.labels_due:.0%} due); estimated {est}"
        )
        if self.realized:
            out += "; realized " + ", ".join(
                f"{m} {v:.3f} (error {self.error.get(m, float('nan')):+.3f})"
                for m, v in self.realized.items()
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "version": self.version,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "scored_from": None if self.scored_from is None else self.scored_from.isoformat(),
            "scored_to": None if self.scored_to is None else self.scored_to.isoformat(),
            "records": self.records,
            "labels_due": self.labels_due,
            "overdue": self.overdue,
            "labelled": self.labelled,
            "estimated": self.estimated,
            "realized": self.realized,
            "error": self.error,
        }


def _estimated(details: Any) -> tuple[dict[str, float], float | None]:
    est = (details or {}).get("estimate") or {}
    values = {}
    for m in METRICS:
        value = (est.get(m) or {}).get("value")
        if value is not None and not np.isnan(value):
            values[m] = float(value)
    threshold = est.get("threshold")
    return values, float(threshold) if threshold is not None else None


def event_span(window) -> tuple[datetime, datetime] | None:
    """The first and last event time of a window's records (`event_at`; None: no records or no column)."""
    if not len(window) or "event_at" not in window:
        return None
    times = window["event_at"].dropna()
    if not len(times):
        return None
    return store.as_utc(times.min().to_pydatetime()), store.as_utc(times.max().to_pydatetime())


def scored_end(run: dict) -> datetime:
    """When a run's window was scored in business time: the last event time its check recorded
    (`details.scored.to`), else the window's last record's time."""
    scored = ((run.get("details") or {}).get("scored") or {}).get("to")
    return datetime.fromisoformat(scored) if scored else store.as_utc(run["window_end"])


def pick_runs(runs: list[dict], period_minutes: float, limit: int) -> list[dict]:
    """Of judged runs (newest first), the newest of each scoring period (its window's end in business
    time, `scored_end`, in periods of `period_minutes` since the epoch), at most `limit` periods: one
    cohort per period."""
    seen: set[int] = set()
    out = []
    for run in runs:
        bucket = int(scored_end(run).timestamp() // (period_minutes * 60.0))
        if bucket in seen:
            continue
        seen.add(bucket)
        out.append(run)
        if len(out) >= limit:
            break
    return out


def cohorts(
    engine: sa.Engine,
    model_name: str,
    limit: int,
    period_minutes: float,
    min_labelled: int,
    archive: Any = None,
    now: datetime | None = None,
    label_policy: dict[str, float] | None = None,
) -> list[Cohort]:
    """The judged cohorts of `model_name` of the last `limit` periods of `period_minutes` (one per
    period: its newest judged window), newest first, each with its estimate and, once `min_labelled` of
    its records have a label, its realized quality. `label_policy` (the data set config's `labels`: horizon_days,
    never_share) says which of their labels are due by the log's watermark."""
    r = store.monitoring_runs
    now = store.as_utc(now) if now is not None else store.utcnow()
    since = now - timedelta(minutes=period_minutes * limit)
    horizon = timedelta(days=float((label_policy or {}).get("horizon_days", 0)))
    keep = 1.0 - float((label_policy or {}).get("never_share", 0))
    watermark = store.event_watermark(engine, model_name) or now
    query = (
        sa.select(r.c.id, r.c.model_version, r.c.window_start, r.c.window_end, r.c.details)
        .where(
            r.c.model_name == model_name,
            r.c.status.in_(JUDGED),
            r.c.window_start.is_not(None),
            r.c.model_version.is_not(None),
            r.c.window_end >= since,
        )
        .order_by(r.c.id.desc())
    )
    with engine.connect() as conn:
        runs = pick_runs([dict(x) for x in conn.execute(query).mappings()], period_minutes, limit)
    out = []
    for run in runs:
        estimated, threshold = _estimated(run["details"])
        window = store.run_window(engine, int(run["id"]), archive)
        if window is None or not len(window):
            continue
        labels = window.get("label")
        labelled = int(labels.notna().sum()) if labels is not None else 0
        cohort = Cohort(
            int(run["id"]),
            str(run["model_version"]),
            store.as_utc(run["window_start"]),
            store.as_utc(run["window_end"]),
            len(window),
            labelled,
            threshold,
            estimated,
        )
        span = event_span(window)
        if span is not None:
            cohort.scored_from, cohort.scored_to = span
            due = (window["event_at"] + horizon <= watermark).to_numpy(bool)
        else:
            due = (window["created_at"] + horizon <= watermark).to_numpy(bool)
        cohort.labels_due = float(due.mean())
        cohort.expected_labelled = cohort.labels_due * keep
        if labels is not None and threshold is not None and labelled >= min_labelled:
            q = live_quality(labels, window["score"], threshold)
            cohort.realized = {m: float(q[m]) for m in METRICS if q.get(m) is not None}
        out.append(cohort)
    return out


def export(model_name: str, found: list[Cohort]) -> None:
    """Gauges per cohort (estimated and realized quality, labelled share) and the estimate's error over
    the cohorts with labels: mean absolute and mean signed error per metric (NaN while no cohort has enough
    labels) and how many cohorts that is. The last export wins (old cohorts leave the gauges)."""
    metrics.cohort_quality.clear()
    metrics.cohort_labelled.clear()
    metrics.estimate_error.clear()
    errors: dict[str, list[float]] = {m: [] for m in METRICS}
    metrics.labels_overdue.labels(model_name).set(max((c.overdue for c in found), default=0.0))
    for c in found:
        cohort = str(c.run_id)
        scored = f"{c.scored_from or c.window_start:%Y-%m-%d %H:%M}"
        metrics.cohort_labelled.labels(model_name, cohort, scored).set(c.labelled_share)
        for m, v in c.estimated.items():
            metrics.cohort_quality.labels(model_name, cohort, scored, m, "estimated").set(v)
        for m, v in c.realized.items():
            metrics.cohort_quality.labels(model_name, cohort, scored, m, "realized").set(v)
        for m, e in c.error.items():
            errors[m].append(e)
    for m, values in errors.items():  # NaN until a cohort has enough labels: the series exists, empty
        metrics.estimate_error.labels(model_name, m, "mean_abs").set(
            float(np.mean(np.abs(values))) if values else float("nan")
        )
        metrics.estimate_error.labels(model_name, m, "mean").set(
            float(np.mean(values)) if values else float("nan")
        )
        metrics.estimate_error.labels(model_name, m, "cohorts").set(len(values))
