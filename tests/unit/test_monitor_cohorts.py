"""Cohorts (monitoring/cohorts.py): each judged window keeps the quality estimated for it without labels;
when its labels arrive days later, a later check puts the realized quality beside it, and the estimate's
error becomes a metric. A cohort whose labels contradict its scores (concept shift, where estimation is
blind) shows a large error. The champion and the reference are stubbed as in test_monitor_window."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

from core import store
from monitoring import check, cohorts, metrics
from tests.support.loop_helpers import log_predictions
from tests.unit.test_monitor_window import THRESHOLD, data, fake_score, setup  # noqa: F401 (fixtures)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def monitor(request):
    """test_monitor_window's `setup`: settings, config, the test split, the engine."""
    return request.getfixturevalue("setup")


def give_labels(engine, keys, labels, at):
    with engine.begin() as conn:
        conn.execute(
            store.feedback.insert(),
            [
                {"request_id": rid, "record_index": i, "label": int(y), "received_at": at}
                for (rid, i), y in zip(keys, labels, strict=True)
            ],
        )


def gauge(name: str, **labels) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {"model_name": "telco-churn", **labels})


def test_realized_quality_joins_the_estimate_when_the_cohorts_labels_arrive(monitor):
    settings, config, test, engine = monitor
    first, second = test.iloc[:300], test.iloc[300:600]
    old = NOW - timedelta(days=40)
    keys_1 = log_predictions(
        engine, first, fake_score(first), config, settings.model_name, "3", feedback=False, at=old
    )
    run_1 = check.run_check(settings, config, summary_table=False, now=old)
    assert run_1.status in ("ok", "drift") and run_1.estimate is not None
    later = NOW - timedelta(days=39)
    keys_2 = log_predictions(
        engine, second, fake_score(second), config, settings.model_name, "3", feedback=False, at=later
    )
    run_2 = check.run_check(settings, config, summary_table=False, now=later)
    # no label yet: both cohorts carry their estimate only
    found = check.look_at_cohorts(settings, engine, later)
    assert [c.run_id for c in found] == [run_2.run_id, run_1.run_id]
    assert all(c.labelled == 0 and c.realized == {} and "roc_auc" in c.estimated for c in found)
    assert gauge("monitor_estimate_error", metric="roc_auc", stat="cohorts") == 0
    assert np.isnan(gauge("monitor_estimate_error", metric="roc_auc", stat="mean_abs"))

    # 30 days on, the first cohort's labels come back as they are; the second's contradict the scores
    give_labels(engine, keys_1, first["label"], old + timedelta(days=30))
    give_labels(engine, keys_2, 1 - second["label"].to_numpy(), later + timedelta(days=30))
    found = check.look_at_cohorts(settings, engine, NOW)
    by_run = {c.run_id: c for c in found}
    c1, c2 = by_run[run_1.run_id], by_run[run_2.run_id]
    assert c1.labelled == c1.records == 300 and c2.labelled == 300
    truth = roc_auc_score(first["label"].astype(int), fake_score(first))
    assert c1.realized["roc_auc"] == pytest.approx(truth)
    assert c1.estimated["roc_auc"] == pytest.approx(run_1.estimate["roc_auc"].value)
    assert c1.error["roc_auc"] == pytest.approx(truth - run_1.estimate["roc_auc"].value)
    # the labels say the opposite of the scores: realized under 0.5, the estimate far too hopeful
    assert c2.realized["roc_auc"] < 0.4 and c2.error["roc_auc"] < -0.3
    assert gauge(
        "monitor_cohort_quality",
        cohort=str(run_1.run_id),
        scored=f"{c1.window_start:%Y-%m-%d %H:%M}",
        metric="roc_auc",
        kind="realized",
    ) == pytest.approx(truth)
    assert gauge("monitor_estimate_error", metric="roc_auc", stat="cohorts") == 2
    mean_abs = gauge("monitor_estimate_error", metric="roc_auc", stat="mean_abs")
    assert mean_abs == pytest.approx((abs(c1.error["roc_auc"]) + abs(c2.error["roc_auc"])) / 2)
    assert mean_abs > 0.1  # EstimateOffRealized's bound
    assert "realized roc_auc" in c2.line() and "300 of 300 labelled" in c2.line()


def test_cohorts_need_enough_labels_and_stay_within_their_periods(monitor, monkeypatch):
    settings, config, test, engine = monitor
    part = test.iloc[:300]
    at = NOW - timedelta(days=3)
    keys = log_predictions(
        engine, part, fake_score(part), config, settings.model_name, "3", feedback=False, at=at
    )
    run = check.run_check(settings, config, summary_table=False, now=at)
    give_labels(engine, keys[:50], part["label"].iloc[:50], NOW)  # fewer than QUALITY_MIN_LABELLED (100)
    (cohort,) = check.look_at_cohorts(settings, engine, NOW)
    assert cohort.run_id == run.run_id and cohort.labelled == 50 and cohort.realized == {}
    # 2 periods of a day look back 2 days only: the cohort scored 3 days ago is out
    monkeypatch.setattr(settings, "cohorts", 2)
    assert check.look_at_cohorts(settings, engine, NOW) == []
    monkeypatch.setattr(settings, "cohorts", 0)
    assert check.look_at_cohorts(settings, engine, NOW) == []


def test_cohorts_follow_business_time_and_say_which_labels_are_overdue(monitor):
    """Two windows checked within the same hour but scored 10 business days apart are two cohorts; their
    labels are due 30 days after their event times by the log's newest event time (not the wall clock),
    and due labels that do not come back, beyond the never share, are overdue."""
    settings, config, test, engine = monitor
    config = dataclasses.replace(config, labels={"horizon_days": 30.0, "never_share": 0.2})
    day0 = NOW - timedelta(days=60)
    a, b, c = test.iloc[:300], test.iloc[300:600], test.iloc[600:700]
    keys_a = log_predictions(
        engine, a, fake_score(a), config, settings.model_name, "3", feedback=False,
        at=NOW - timedelta(hours=2), event_at=day0,
    )  # fmt: skip
    run_a = check.run_check(settings, config, summary_table=False, now=NOW - timedelta(hours=2))
    log_predictions(
        engine, b, fake_score(b), config, settings.model_name, "3", feedback=False,
        at=NOW - timedelta(hours=1), event_at=day0 + timedelta(days=10),
    )  # fmt: skip
    run_b = check.run_check(settings, config, summary_table=False, now=NOW - timedelta(hours=1))
    found = check.look_at_cohorts(settings, engine, NOW, config)
    assert [x.run_id for x in found] == [run_b.run_id, run_a.run_id]  # one processing day, two business days
    cohort_a = found[1]
    assert cohort_a.scored_to == day0 - timedelta(seconds=1)
    assert cohort_a.scored_from == day0 - timedelta(seconds=300)
    assert cohort_a.labels_due == 0 and gauge("monitor_labels_overdue_share") == 0
    assert f"scored {day0 - timedelta(seconds=300):%Y-%m-%d %H:%M}" in cohort_a.line()

    # records scored on business day 35 move the watermark: cohort A's labels (day 0 + 30) are due now,
    # B's (day 10 + 30) not yet; none came back: 80% of A's records are overdue (20% never come back)
    log_predictions(
        engine, c, fake_score(c), config, settings.model_name, "3", feedback=False,
        at=NOW - timedelta(minutes=30), event_at=day0 + timedelta(days=35),
    )  # fmt: skip
    by_run = {x.run_id: x for x in check.look_at_cohorts(settings, engine, NOW, config)}
    assert by_run[run_a.run_id].labels_due == 1.0 and by_run[run_b.run_id].labels_due == 0.0
    assert by_run[run_a.run_id].overdue == pytest.approx(0.8)
    assert gauge("monitor_labels_overdue_share") == pytest.approx(0.8)
    # 85% of A's labels come back: within the never share, nothing is overdue
    give_labels(engine, keys_a[:255], a["label"].iloc[:255], NOW)
    by_run = {x.run_id: x for x in check.look_at_cohorts(settings, engine, NOW, config)}
    assert by_run[run_a.run_id].overdue == 0 and gauge("monitor_labels_overdue_share") == 0


def test_one_cohort_per_period_the_newest_judged_window():
    def run(i, minute):
        return {"id": i, "window_end": datetime(2026, 12, 7, 0, 0, tzinfo=UTC) + timedelta(minutes=minute)}

    runs = [run(9, 130), run(8, 125), run(7, 70), run(6, 65), run(5, 10), run(4, 5)]  # newest first
    assert [r["id"] for r in cohorts.pick_runs(runs, 60, limit=10)] == [9, 7, 5]
    assert [r["id"] for r in cohorts.pick_runs(runs, 60, limit=2)] == [9, 7]
    assert [r["id"] for r in cohorts.pick_runs(runs, 1, limit=10)] == [9, 8, 7, 6, 5, 4]


def test_a_broken_read_costs_the_check_nothing(monitor, monkeypatch):
    settings, config, test, engine = monitor

    def broken(*a, **k):
        raise sa.exc.OperationalError("select", {}, Exception("database is locked"))

    monkeypatch.setattr(cohorts, "cohorts", broken)
    assert check.look_at_cohorts(settings, engine, NOW) == []
