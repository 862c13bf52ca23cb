"""New data starts a retrain: labelled records since the champion was trained and a changed source,
judged by the monitor's scheduled check with the champion and reference stubbed (as in
test_monitor_window). One trigger per new data (cooldown and dedupe as for drift), none when nothing
is new, one naming both when drift and new data are seen by the same check."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest

from core import registry, store
from core.dataset import ConfigError, load_config
from core.features import prepare
from core.newdata import DUPLICATE_LEFT_OUT
from core.source import read_source, source_hash
from monitoring import check, metrics, monitor, schedule
from monitoring.scenarios import Scenario, apply
from monitoring.settings import MonitorSettings
from tests.support.loop_helpers import log_predictions
from training.data import assign_split, write_snapshot
from training.settings import TrainingSettings

THRESHOLD = 0.3


@pytest.fixture(scope="module")
def data():
    config = load_config(TrainingSettings.from_env().dataset_config)
    raw = read_source(config)
    features, label = prepare(raw, config)
    side = assign_split(features, 0.15, 0.15)
    frame = features.assign(label=label.to_numpy())
    valid = frame[side == "valid"].reset_index(drop=True)
    test = frame[side == "test"].reset_index(drop=True)
    return config, raw, valid, test


def fake_score(frame: pd.DataFrame) -> np.ndarray:
    z = -0.04 * frame["tenure"].fillna(0) + 0.02 * frame["monthly_charges"].fillna(0) - 0.8
    return (1 / (1 + np.exp(-z))).to_numpy()


@pytest.fixture
def env(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config, raw, valid, test = data
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    monkeypatch.setenv("MONITOR_REPORTS_URI", str(tmp_path / "reports"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # never read
    monkeypatch.setenv("RETRAIN_TRIGGER", "log")
    monkeypatch.setenv("MONITOR_WINDOW_SIZE", "300")
    monkeypatch.setenv("MONITOR_MIN_WINDOW", "200")
    monkeypatch.setenv("MONITOR_WINDOW_MINUTES", "60")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))  # no snapshot: every labelled record counts
    settings = MonitorSettings.from_env()
    # the source: a CSV copy of the data set, so a test can change it
    csv = tmp_path / "source.csv"
    raw.to_csv(csv, index=False)
    config = dataclasses.replace(
        config,
        source={"kind": "csv", "path": str(csv)},
        retrain={"new_labels": 100, "on_source_change": True},
    )
    trained_at = datetime.now(UTC) - timedelta(days=2)
    champ = check.Champion(
        settings.model_name, "3", "run-x", THRESHOLD, trained_at=trained_at, source_hash=source_hash(config)
    )
    monkeypatch.setattr(check, "champion", lambda s: champ)
    reference = valid.assign(score=fake_score(valid))
    monkeypatch.setattr(check, "reference_of", lambda run_id, *artifact: reference)
    engine = store.engine_for(settings.database_url)
    return settings, config, test, engine, csv, trained_at


def log(engine, frame, config, settings, at=None, feedback=True):
    return log_predictions(
        engine, frame, fake_score(frame), config, settings.model_name, "3", at=at, feedback=feedback
    )


def events(settings) -> list[dict]:
    with store.engine_for(settings.database_url).connect() as conn:
        t = store.trigger_events
        return [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.id)).mappings().all()]


def fired(settings) -> list[dict]:
    return [e for e in events(settings) if e["status"] == "fired"]


def test_nothing_new_fires_nothing(env):
    settings, config, test, engine, _, trained_at = env
    # labels from before the champion was trained do not count; unlabelled predictions do not either
    log(engine, test.iloc[:150], config, settings, at=trained_at - timedelta(hours=1))
    log(engine, test.iloc[150:400], config, settings, feedback=False)
    for _ in range(2):
        outcome = check.run_check(settings, config, summary_table=False)
        assert outcome.trigger is None, outcome.reason
        assert outcome.freshness.new_labels == 0 and outcome.freshness.reasons == []
    assert events(settings) == []
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'monitor_labelled_since_training{model_name="telco-churn"} 0.0' in text
    assert 'monitor_source_changed{model_name="telco-churn"} 0.0' in text
    age = float(text.split('monitor_champion_data_age_seconds{model_name="telco-churn"} ')[1].split()[0])
    assert 2 * 86400 - 60 < age < 2 * 86400 + 3600


def test_new_labels_fire_exactly_one_new_data_trigger(env):
    settings, config, test, engine, _, _ = env
    log(engine, test.iloc[:99], config, settings)  # one short of the bound: nothing
    below = check.run_check(settings, config, summary_table=False)
    assert below.status == "skipped" and below.trigger is None and below.freshness.new_labels == 99
    log(engine, test.iloc[99:120], config, settings)  # 120 >= 100, still below the drift window
    outcomes = [check.run_check(settings, config, summary_table=False) for _ in range(3)]
    assert outcomes[0].trigger.fired and "new data: 120 labelled records" in outcomes[0].reason
    assert [o.trigger.status for o in outcomes[1:]] == ["duplicate", "duplicate"]
    [event] = fired(settings)
    assert event["reason"].startswith("new data") and event["source"] == "monitor"
    assert event["parameters"]["TRIGGER_KINDS"] == "new data"
    assert event["parameters"]["NEW_LABELS"] == "120"
    with engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(store.monitoring_runs).where(store.monitoring_runs.c.id == outcomes[0].run_id)
            )
            .mappings()
            .one()
        )
    assert row["trigger_event_id"] == event["id"] and row["details"]["freshness"]["new_labels"] == 120


def test_a_changed_source_fires_exactly_one_new_data_trigger(env):
    settings, config, _, _, csv, _ = env
    assert check.run_check(settings, config, summary_table=False).trigger is None
    frame = pd.read_csv(csv)
    frame.iloc[:-5].to_csv(csv, index=False)  # five records fewer: a new content
    outcomes = [check.run_check(settings, config, summary_table=False) for _ in range(3)]
    assert outcomes[0].trigger.fired and "the source changed" in outcomes[0].reason
    assert [o.trigger.status for o in outcomes[1:]] == ["duplicate", "duplicate"]
    [event] = fired(settings)
    assert event["parameters"]["SOURCE_HASH"] == source_hash(config)
    assert event["parameters"]["TRIGGER_KINDS"] == "new data"
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'monitor_source_changed{model_name="telco-churn"} 1.0' in text


def test_source_check_off_in_the_config_ignores_a_changed_source(env):
    settings, config, _, _, csv, _ = env
    config = dataclasses.replace(config, retrain={"new_labels": 0, "on_source_change": False})
    pd.read_csv(csv).iloc[:-5].to_csv(csv, index=False)
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.trigger is None and outcome.freshness.source_hash is None


def test_drift_and_new_data_in_one_check_fire_one_trigger_with_both_reasons(env):
    settings, config, test, engine, _, _ = env
    drifted = apply(test.sample(300, random_state=1), Scenario("covariate"), config, reference=test)
    log(engine, drifted, config, settings)  # 300 labelled records: drift, and >= 100 new labels
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.status == "drift" and outcome.trigger.fired
    [event] = events(settings)
    assert "drift share" in event["reason"] and "new data: 300 labelled records" in event["reason"]
    assert event["parameters"]["TRIGGER_KINDS"] == "drift,new data"
    again = check.run_check(settings, config, summary_table=False)
    assert again.trigger.status == "duplicate" and len(fired(settings)) == 1


def test_a_drift_alarm_waits_for_labels_then_fires_once(env):
    settings, config, test, engine, _, _ = env
    config = dataclasses.replace(
        config, retrain={"new_labels": 0, "on_source_change": False, "min_labels": 100}
    )
    drifted = apply(test.sample(600, random_state=2), Scenario("covariate"), config, reference=test)
    log(engine, drifted.iloc[:300], config, settings, feedback=False)  # drift seen, no label back yet
    waiting = check.run_check(settings, config, summary_table=False)
    assert waiting.status == "drift" and waiting.trigger.status == "waiting_labels"
    assert (
        "waiting for labels: 0 of the 300 checked records"
        in waiting.trigger.detail + waiting.reason + (events(settings)[0]["reason"])
    )
    assert fired(settings) == []
    log(engine, drifted.iloc[300:], config, settings)  # the labels are in: the next check fires, once
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.trigger.fired, outcome.trigger.detail
    assert [e["status"] for e in events(settings)] == ["waiting_labels", "fired"]
    assert check.run_check(settings, config, summary_table=False).trigger.status == "duplicate"


def test_new_data_never_waits_for_labels(env):
    settings, config, test, engine, csv, _ = env
    config = dataclasses.replace(
        config, retrain={"new_labels": 0, "on_source_change": True, "min_labels": 100}
    )
    drifted = apply(test.sample(300, random_state=3), Scenario("covariate"), config, reference=test)
    log(engine, drifted, config, settings, feedback=False)
    csv.write_text(csv.read_text() + csv.read_text().splitlines()[1] + "\n")  # the source changed
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.trigger.fired and outcome.trigger.parameters["TRIGGER_KINDS"] == "drift,new data"


def test_retrain_config_is_validated(tmp_path):
    base = Path(TrainingSettings.from_env().dataset_config).read_text()
    path = tmp_path / "d.yaml"
    path.write_text(base + "\nretrain: {new_labels: -1}\n")
    with pytest.raises(ConfigError, match="retrain.new_labels"):
        load_config(path)
    path.write_text(base + "\nretrain: {min_labels: 1.5}\n")
    with pytest.raises(ConfigError, match="retrain.min_labels"):
        load_config(path)
    path.write_text(base + "\nretrain: {new_label: 5}\n")
    with pytest.raises(ConfigError, match="unknown"):
        load_config(path)


# --------------------------------------------------------------------------- the schedule
def test_the_schedule_records_nothing_new_and_fires_no_retrain(env, monkeypatch):
    settings, config, test, engine, _, trained_at = env
    monkeypatch.setattr(registry, "connect", lambda uri: None)
    log(engine, test.iloc[:50], config, settings, at=trained_at - timedelta(hours=1))  # before training
    event = schedule.scheduled_retrain(settings, config)
    assert event.status == "nothing_new" and "nothing new" in event_reason(settings, event.id)
    assert fired(settings) == []


def test_the_schedule_retrains_on_any_new_label_once(env, monkeypatch):
    settings, config, test, engine, _, _ = env
    monkeypatch.setattr(registry, "connect", lambda uri: None)
    log(engine, test.iloc[:3], config, settings)  # far below retrain.new_labels (100): still new data
    first = schedule.scheduled_retrain(settings, config)
    assert first.fired and first.parameters["TRIGGER_KINDS"] == "schedule,new data"
    assert first.parameters["REASON"].startswith("schedule: new data: 3 labelled records")
    again = schedule.scheduled_retrain(settings, config)
    assert again.status == "duplicate" and len(fired(settings)) == 1
    # the monitor's own check does not fire for 3 labels: the bound is for unscheduled retrains
    assert check.run_check(settings, config, summary_table=False).trigger is None


def test_the_schedule_is_due_once_per_period_and_never_when_off(env, monkeypatch):
    settings, config, test, engine, _, _ = env
    monkeypatch.setattr(registry, "connect", lambda uri: None)
    assert not schedule.schedule_due(settings)  # RETRAIN_SCHEDULE_SECONDS=0: off
    daily = settings.model_copy(update={"schedule_seconds": 86400.0})
    assert schedule.schedule_due(daily)  # never ran
    schedule.scheduled_retrain(daily, config)
    assert not schedule.schedule_due(daily)
    assert schedule.schedule_due(daily, now=datetime.now(UTC) + timedelta(days=1, minutes=1))


def event_reason(settings, event_id: int) -> str:
    return next(e["reason"] for e in events(settings) if e["id"] == event_id)


def test_the_loop_runs_the_schedule_when_due(env, monkeypatch):
    settings, config, test, engine, _, _ = env
    monkeypatch.setattr(registry, "connect", lambda uri: None)
    monkeypatch.setenv("RETRAIN_SCHEDULE_SECONDS", "86400")
    monkeypatch.setenv("MONITOR_METRICS_PORT", "0")
    monkeypatch.setenv("MONITOR_HOST", "127.0.0.1")
    settings = MonitorSettings.from_env()
    monkeypatch.setattr(monitor, "load_config", lambda path: config)
    log(engine, test.iloc[:5], config, settings)
    assert monitor.loop(settings, iterations=1) == 0
    [event] = [e for e in events(settings) if e["source"] == "schedule"]
    assert event["status"] == "fired" and event["reason"].startswith("schedule: new data: 5 labelled")


# --------------------------------------------------------------------------- the drifted cohort's labels
def give_labels(engine, keys: list[tuple[str, int]], frame: pd.DataFrame) -> None:
    """Feedback arriving now for records logged earlier without it (a label horizon)."""
    with engine.begin() as conn:
        conn.execute(
            store.feedback.insert(),
            [
                {"request_id": r, "record_index": i, "label": int(y), "received_at": datetime.now(UTC)}
                for (r, i), y in zip(keys, frame["label"], strict=True)
            ],
        )


def test_a_waiting_alarm_fires_when_its_own_cohort_is_labelled(env):
    settings, config, test, engine, _, _ = env
    config = dataclasses.replace(
        config, retrain={"new_labels": 0, "on_source_change": False, "min_labels": 100}
    )
    drifted = apply(test.sample(300, random_state=4), Scenario("covariate"), config, reference=test)
    earlier = datetime.now(UTC) - timedelta(minutes=20)
    drifted_keys = log(engine, drifted, config, settings, at=earlier, feedback=False)
    alarm = check.run_check(settings, config, summary_table=False)
    assert alarm.status == "drift" and alarm.trigger.status == check.WAITING
    [wait] = events(settings)
    assert wait["monitoring_run_id"] == alarm.run_id  # the wait remembers the drifted window
    assert alarm.cohort.run_id == alarm.run_id and (alarm.cohort.have, alarm.cohort.need) == (0, 100)

    # the window moves on: newer, quiet records, no labels yet; the alarm is not lost
    quiet = test.drop(drifted.index).sample(300, random_state=5)
    quiet_keys = log(engine, quiet, config, settings, feedback=False)
    later = check.run_check(settings, config, summary_table=False)
    assert later.status == "ok" and later.trigger is None, later.reason
    assert later.cohort is not None and later.cohort.run_id == alarm.run_id
    assert f"waiting for labels of run {alarm.run_id}'s cohort: 0 of 300, need 100" in later.line()
    gauge = metrics.REGISTRY.get_sample_value
    assert gauge("monitor_waiting_cohort_labels", {"model_name": "telco-churn", "figure": "need"}) == 100

    # labels for the newer records alone do not start it: they are not the drifted cohort's
    give_labels(engine, quiet_keys, quiet)
    newer_only = check.run_check(settings, config, summary_table=False)
    assert newer_only.trigger is None and newer_only.cohort.have == 0, newer_only.reason
    assert fired(settings) == []

    # 120 of the drifted records get their label: the next check fires the retrain, naming the cohort
    give_labels(engine, drifted_keys[:120], drifted.iloc[:120])
    outcome = check.run_check(settings, config, summary_table=False)
    assert outcome.status == "ok" and outcome.trigger is not None and outcome.trigger.fired, outcome.reason
    [event] = fired(settings)
    assert event["monitoring_run_id"] == alarm.run_id  # the retrain is for the drifted window
    assert "drift share" in event["reason"]  # the original alarm's reasons
    assert f"120 of the 300 records of monitoring run {alarm.run_id}" in event["reason"]
    assert "retrain.min_labels 100" in event["reason"]
    assert event["parameters"]["TRIGGER_KINDS"] == "drift"
    assert f"retrain for run {alarm.run_id}'s cohort" in outcome.reason
    assert gauge("monitor_waiting_cohort_labels", {"model_name": "telco-churn", "figure": "need"}) is None
    # the fired retrain settles the wait: nothing pending, nothing fired again
    settled = check.run_check(settings, config, summary_table=False)
    assert settled.trigger is None and settled.cohort is None
    assert len(fired(settings)) == 1


# --------------------------------------------------------------------------- new data a retrain would add
def test_new_data_counts_the_rows_a_retrain_would_add(env, data):
    settings, config, test, engine, _, trained_at = env
    raw = data[1]
    write_snapshot(raw, config, settings.data_dir)  # the champion's data: the whole source
    # 150 labels on replayed held-out records: rows already in the data, a retrain adds none
    log(engine, test.iloc[:150], config, settings)
    replayed = check.run_check(settings, config, summary_table=False)
    f = replayed.freshness
    assert (f.new_labels, f.new_rows) == (150, 0) and f.error is None, f.error
    assert f.left_out[DUPLICATE_LEFT_OUT] == 150
    assert replayed.trigger is None and events(settings) == []
    # the same number of labels on new records (charges a cent off): a retrain adds them, it fires
    new = test.iloc[150:300].assign(monthly_charges=test["monthly_charges"].iloc[150:300] + 0.01)
    log(engine, new, config, settings)
    outcome = check.run_check(settings, config, summary_table=False)
    f = outcome.freshness
    assert (f.new_labels, f.new_rows) == (300, 150)
    assert outcome.trigger is not None and outcome.trigger.fired, outcome.reason
    [event] = fired(settings)
    assert event["reason"].startswith(
        "new data: 150 new labelled records a retrain would add (of 300 labelled since v3 was trained; "
        "150 already in the data (same features and label)) (retrain.new_labels 100)"
    )
    row = next(r for r in runs(settings) if r["id"] == outcome.run_id)
    figures = row["details"]["freshness"]
    assert figures["new_labels"] == 300 and figures["new_rows"] == 150
    assert figures["left_out"] == {
        "outside the declared schema": 0,
        DUPLICATE_LEFT_OUT: 150,
        "with a missing value beyond the declared max_missing_share": 0,
    }


def test_new_data_without_a_readable_snapshot_counts_every_label_and_says_so(env):
    settings, config, test, engine, _, _ = env
    log(engine, test.iloc[:120], config, settings)
    champ = check.champion(settings)
    f = check.check_freshness(settings, config, champ, engine)
    assert f.new_labels == 120 and f.new_rows is None and f.kinds == ["new_labels"]
    assert f.error.startswith("new data counted as every labelled record: no snapshot of 'telco_churn'")


def runs(settings) -> list[dict]:
    with store.engine_for(settings.database_url).connect() as conn:
        r = store.monitoring_runs
        return [dict(x) for x in conn.execute(sa.select(r).order_by(r.c.id)).mappings().all()]
