"""The monitor's check without a trained model: champion and reference are stubbed, the prediction log
is written directly. Minimum window, window by count and by time, the history row, the report and the
metrics, and the trigger called once on an alarm."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest

from core import store
from core.dataset import load_config
from core.features import prepare
from monitoring import check, metrics
from monitoring.scenarios import Scenario, apply
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger
from monitoring.webhook import alert_waiting, handle_alerts
from tests.support.loop_helpers import log_predictions
from training.data import assign_split, read_source
from training.settings import TrainingSettings

THRESHOLD = 0.3


@pytest.fixture(scope="module")
def data():
    config = load_config(TrainingSettings.from_env().dataset_config)
    features, label = prepare(read_source(config), config)
    side = assign_split(features, 0.15, 0.15)
    frame = features.assign(label=label.to_numpy())
    return config, frame[side == "valid"].reset_index(drop=True), frame[side == "test"].reset_index(drop=True)


def fake_score(frame: pd.DataFrame) -> np.ndarray:
    """A deterministic stand-in model: short tenure and high charges churn."""
    z = -0.04 * frame["tenure"].fillna(0) + 0.02 * frame["monthly_charges"].fillna(0) - 0.8
    return (1 / (1 + np.exp(-z))).to_numpy()


@pytest.fixture
def setup(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config, valid, test = data
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'loop.db'}")
    monkeypatch.setenv("MONITOR_REPORTS_URI", str(tmp_path / "reports"))
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}"
    )  # never read: champion is faked
    monkeypatch.setenv("RETRAIN_TRIGGER", "log")
    monkeypatch.setenv("MONITOR_WINDOW_SIZE", "300")
    monkeypatch.setenv("MONITOR_MIN_WINDOW", "200")
    monkeypatch.setenv("MONITOR_WINDOW_MINUTES", "60")
    settings = MonitorSettings.from_env()
    reference = valid.assign(score=fake_score(valid))
    monkeypatch.setattr(check, "champion", lambda s: check.Champion(s.model_name, "3", "run-x", THRESHOLD))
    monkeypatch.setattr(check, "reference_of", lambda run_id, *artifact: reference)
    engine = store.engine_for(settings.database_url)
    return settings, config, test, engine


def log(engine, frame, config, settings, version="3", at=None):
    return log_predictions(engine, frame, fake_score(frame), config, settings.model_name, version, at=at)


def rows(settings):
    with store.engine_for(settings.database_url).connect() as conn:
        return (
            conn.execute(sa.select(store.monitoring_runs).order_by(store.monitoring_runs.c.id))
            .mappings()
            .all()
        )


def test_below_the_minimum_window_it_skips_with_a_reason(setup):
    settings, config, test, engine = setup
    log(engine, test.head(12), config, settings)
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.status == "skipped"
    assert "12 predictions" in outcome.reason and "minimum 200" in outcome.reason
    row = rows(settings)[-1]
    assert row["status"] == "skipped" and not row["alarm"] and row["window_size"] == 12
    assert row["report_uri"] is None and row["trigger_event_id"] is None


def test_window_counts_only_recent_records_of_the_champion(setup):
    settings, config, test, engine = setup
    old = datetime.now(UTC) - timedelta(hours=3)
    log(engine, test.iloc[:250], config, settings, at=old)  # too old for the 60-minute window
    log(engine, test.iloc[250:500], config, settings, version="2")  # served by another version
    log(engine, test.iloc[500:650], config, settings)
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.status == "skipped" and outcome.window == 150
    log(engine, test.iloc[650:1000], config, settings)
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.window == 300  # MONITOR_WINDOW_SIZE: the most recent 300


def test_a_quiet_window_writes_history_report_and_metrics(setup):
    settings, config, test, engine = setup
    log(engine, test.sample(300, random_state=0), config, settings)
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.status == "ok", outcome.reason
    row = rows(settings)[-1]
    assert row["n_features"] == len(config.features) and row["drift_share"] == 0
    assert row["n_labelled"] == 300 and 0.5 < row["roc_auc"] <= 1
    features = row["details"]["features"]
    assert {f["feature"] for f in features} == set(config.feature_names)
    assert all(f["method"] in ("wasserstein", "jensenshannon") and f["threshold"] > 0 for f in features)
    assert Path(row["report_uri"]).is_file() and Path(row["report_uri"]).stat().st_size > 10_000
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'monitor_drift_share{model_name="telco-churn"} 0.0' in text
    assert "monitor_feature_drift_score" in text and 'monitor_live_quality{metric="roc_auc"' in text


def test_a_window_carries_its_quality_estimated_without_labels(setup):
    settings, config, test, engine = setup
    window = test.sample(300, random_state=2)
    log(engine, window, config, settings)
    outcome = check.run_check(settings, config, summary_table=False)
    est = rows(settings)[-1]["details"]["estimate"]
    assert est["method"] == "cbpe" and est["n"] == 300 and est["threshold"] == THRESHOLD
    # the stand-in model is not calibrated: the map fitted on its labelled reference reads its scores
    assert est["calibration"] == "isotonic map on the reference"
    mapping = check.calibration_map(test.iloc[:0].assign(score=[], label=[]))
    assert mapping is None  # no labelled reference, no map
    # the same figures as core.estimate computes from the window's scores and the reference's map
    scores = fake_score(window)
    valid_ref = check.reference_of("run-x")
    expected = check.estimate_window(
        pd.DataFrame({"score": scores}), THRESHOLD, check.calibration_map(valid_ref)
    )
    for metric in ("roc_auc", "recall", "precision"):
        assert est[metric]["value"] == pytest.approx(expected[metric].value)
        assert est[metric]["low"] <= est[metric]["value"] <= est[metric]["high"]
    # the realized quality of this undrifted window is within the band
    assert est["roc_auc"]["low"] <= outcome.result.quality["roc_auc"] <= est["roc_auc"]["high"]
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'monitor_estimated_quality{bound="value",metric="roc_auc",model_name="telco-churn"}' in text


def test_a_drifted_window_alarms_and_triggers_once(setup):
    settings, config, test, engine = setup
    drifted = apply(test.sample(300, random_state=1), Scenario("covariate"), config, reference=test)
    log(engine, drifted, config, settings)
    first = check.run_check(settings, config, summary_table=False)
    assert first.status == "drift"
    assert first.trigger is not None and first.trigger.fired
    second = check.run_check(settings, config, summary_table=False)
    assert second.status == "drift" and second.trigger.status == "duplicate"
    row = rows(settings)[-2]
    assert row["alarm"] and row["trigger_event_id"] == first.trigger.id
    assert any("drift share" in r for r in row["alarm_reasons"])


def test_no_champion_is_a_stated_skip(setup, monkeypatch):
    settings, config, _, _ = setup
    monkeypatch.setattr(check, "champion", lambda s: None)
    outcome = check.run_check(settings, config)
    assert outcome.status == "skipped" and "no champion" in outcome.reason


# --------------------------------------------------------------------------- harm estimated without labels
def harmful(test: pd.DataFrame, n: int = 300) -> pd.DataFrame:
    """Customers the stand-in model can hardly tell apart (scores between 0.15 and 0.45): its ranking on
    them is poor, which CBPE sees from the scores alone (estimated ROC AUC about 0.66 against 0.81)."""
    s = fake_score(test)
    middle = test[(s > 0.15) & (s < 0.45)]
    return middle.sample(n, replace=len(middle) < n, random_state=0)


def harmless(test: pd.DataFrame, n: int = 300) -> pd.DataFrame:
    """Drift in features the stand-in model does not use: the scores, and so every estimate, stay."""
    window = test.sample(n, random_state=1).copy()
    window["payment_method"] = "Mailed check"
    window["contract"] = "Two year"
    window["partner"] = 1 - window["partner"]
    return window


def with_estimate(config, **estimate):
    return dataclasses.replace(config, estimate={"max_drop": {}, "drift_needs_harm": False, **estimate})


def gauge(name: str, **labels) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {"model_name": "telco-churn", **labels})


def test_an_estimated_drop_alarms_before_any_label_and_the_retrain_waits(setup):
    settings, config, test, engine = setup
    log_predictions(
        engine, (w := harmful(test)), fake_score(w), config, settings.model_name, "3", feedback=False
    )
    unbounded = check.run_check(settings, with_estimate(config), summary_table=False)
    assert unbounded.harm is not None and unbounded.harm.kinds == []  # no bound: reported, not judged
    assert unbounded.harm.drops["roc_auc"] > 0.1

    bounded = with_estimate(config, max_drop={"roc_auc": 0.05})
    outcome = check.run_check(settings, bounded, summary_table=False)
    assert outcome.harm.kinds == ["estimated_drop:roc_auc"] and outcome.alarmed
    row = rows(settings)[-1]
    assert row["status"] == "drift" and row["alarm"] and row["n_labelled"] == 0
    assert any(r.startswith("estimated roc_auc 0.6") for r in row["alarm_reasons"]), row["alarm_reasons"]
    harm = row["details"]["harm"]
    assert harm["alarm"] and harm["max_drop"] == {"roc_auc": 0.05}
    assert harm["drop"]["roc_auc"] == pytest.approx(
        outcome.harm.baseline["roc_auc"] - outcome.estimate["roc_auc"].value
    )
    # no label yet: the alarm is recorded and the retrain waits for labels (retrain.min_labels)
    assert outcome.trigger is not None and outcome.trigger.status == check.WAITING
    with engine.connect() as conn:
        event = (
            conn.execute(
                sa.select(store.trigger_events).where(store.trigger_events.c.id == outcome.trigger.id)
            )
            .mappings()
            .one()
        )
    assert event["status"] == check.WAITING and "estimated roc_auc 0.6" in event["reason"]
    assert "waiting for labels: 0 of the 300" in event["reason"]
    assert gauge("monitor_estimated_harm") == 1
    assert gauge("monitor_estimated_quality_drop", metric="roc_auc") == pytest.approx(harm["drop"]["roc_auc"])


def test_drift_without_estimated_harm_stays_a_warning_and_retrains_nothing(setup):
    settings, config, test, engine = setup
    log(engine, harmless(test), config, settings)  # labelled: nothing waits for labels
    gated = with_estimate(config, max_drop={"roc_auc": 0.05, "recall": 0.15}, drift_needs_harm=True)
    outcome = check.run_check(settings, gated, summary_table=False)
    assert outcome.result.alarm, outcome.result.summary()  # the drift policy alarms ...
    assert outcome.harm.kinds == [] and not outcome.alarmed  # ... no estimated metric moved ...
    assert outcome.trigger is None  # ... so nothing retrains
    assert outcome.status == "drift" and outcome.reason.startswith("drift without estimated harm")
    row = rows(settings)[-1]
    assert not row["alarm"] and row["trigger_event_id"] is None
    assert row["details"]["warning"].startswith("drift without estimated harm")
    assert abs(row["details"]["harm"]["drop"]["roc_auc"]) < 0.02
    assert gauge("monitor_drift_level") == 1 and gauge("monitor_alarm") == 0  # DataDrift does not fire
    # the same window without the rule: the drift alarm starts a retrain
    plain = check.run_check(settings, config, summary_table=False)
    assert plain.alarmed and plain.trigger is not None and plain.trigger.fired
    assert gauge("monitor_drift_level") == 2


def test_harmful_drift_with_the_rule_retrains_naming_both(setup):
    settings, config, test, engine = setup
    log(engine, harmful(test), config, settings)  # labelled: the retrain can start
    gated = with_estimate(config, max_drop={"roc_auc": 0.05}, drift_needs_harm=True)
    outcome = check.run_check(settings, gated, summary_table=False)
    assert outcome.warning is None and outcome.alarmed
    assert outcome.trigger is not None and outcome.trigger.fired
    kinds = outcome.trigger.parameters["TRIGGER_KINDS"].split(",")
    assert "estimated harm" in kinds and "drift" in kinds


def test_an_alertmanager_alert_waits_for_its_cohorts_labels_then_fires(setup):
    """An alert (Alertmanager's webhook) with too few labels waits with the champion's newest judged
    window as its cohort; labels of newer records do not fire it, its own cohort's labels do."""
    settings, config, test, engine = setup
    first, newer = test.iloc[:300], test.iloc[300:600]
    scored = datetime.now(UTC) - timedelta(minutes=20)  # apart from the newer records' minutes
    keys = log_predictions(
        engine, first, fake_score(first), config, settings.model_name, "3", feedback=False, at=scored
    )
    judged = check.run_check(settings, config, summary_table=False, now=scored)
    assert judged.status == "ok"
    trigger = RetrainTrigger(settings)
    payload = {
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ChurnLiveRecallLow"},
                "annotations": {"summary": "live recall under its floor"},
            }
        ]
    }
    [held] = handle_alerts(payload, trigger, settings.model_name, alert_waiting(settings, config))
    assert held.status == check.WAITING
    with engine.connect() as conn:
        run_of_wait = conn.execute(
            sa.select(store.trigger_events.c.monitoring_run_id).where(store.trigger_events.c.id == held.id)
        ).scalar()
    assert run_of_wait == judged.run_id
    # newer records come with their labels: the alert's cohort still has none, nothing fires
    log_predictions(engine, newer, fake_score(newer), config, settings.model_name, "3", feedback=True)
    later = check.run_check(settings, config, summary_table=False)
    assert later.cohort is not None and later.cohort.run_id == judged.run_id and later.cohort.have == 0
    assert later.trigger is None or not later.trigger.fired
    # the alert's own cohort is labelled: the next check fires the alert's retrain for that window
    with engine.begin() as conn:
        conn.execute(
            store.feedback.insert(),
            [
                {"request_id": rid, "record_index": i, "label": int(y), "received_at": datetime.now(UTC)}
                for (rid, i), y in zip(keys, first["label"], strict=True)
            ],
        )
    fired = check.run_check(settings, config, summary_table=False)
    assert fired.trigger is not None and fired.trigger.fired, fired.line()
    assert fired.cohort.run_id == judged.run_id and fired.cohort.kinds == ["alert:ChurnLiveRecallLow"]
    assert "alert ChurnLiveRecallLow: live recall under its floor" in fired.trigger.parameters["REASON"]
