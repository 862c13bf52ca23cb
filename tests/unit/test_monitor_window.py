"""The monitor's check without a trained model: champion and reference are stubbed, the prediction log
is written directly. Minimum window, window by count and by time, the history row, the report and the
metrics, and the trigger called once on an alarm."""

from __future__ import annotations

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
