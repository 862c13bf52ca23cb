"""The closed loop settles: drift -> retrain -> promote -> the same traffic reads ok -> a second,
different drift is still detected. Exactly two retrain triggers fire, with the cooldown and the dedupe
off (so a third, spurious one would be counted, not held back).

A fresh embedded store (its own v1); predictions are written straight into the prediction log, scored
by the champion that serves them, with their labels as feedback; the trigger's `log` backend records
each decision and the test runs the retrain itself, as the local backend would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from core import registry, store
from core.dataset import load_config
from monitoring import check
from monitoring.scenarios import Scenario, apply
from monitoring.settings import MonitorSettings
from tests.conftest import REPO
from tests.support.loop_helpers import champion_data, log_predictions, score
from training import gate, retrain, train
from training.settings import TrainingSettings

WINDOW = 300
FIRST = Scenario("covariate", ("monthly_charges", "tenure"), strength=1.0)
# every record moved to another contract, payment method and internet service
SECOND = Scenario("covariate", ("contract", "payment_method", "internet_service"), strength=2.0)


@pytest.fixture
def loop_env(embedded_env, monkeypatch: pytest.MonkeyPatch):
    # drift alone triggers here: new labels (retrain.new_labels) would fire a trigger of their own
    raw = yaml.safe_load((REPO / "config" / "telco_churn.yaml").read_text())
    raw["retrain"]["new_labels"] = 0
    config = embedded_env / "telco_churn.yaml"
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DATASET_CONFIG", str(config))
    for key, value in {
        "RETRAIN_TRIGGER": "log",
        "TRIGGER_COOLDOWN_SECONDS": "0",
        "TRIGGER_DEDUPE_SECONDS": "0",
        "MONITOR_WINDOW_SIZE": str(WINDOW),
        "MONITOR_MIN_WINDOW": "200",
        "MONITOR_WINDOW_MINUTES": "60",
    }.items():
        monkeypatch.setenv(key, value)
    return embedded_env


def serve(engine, frame: pd.DataFrame, config, name: str, phase: int) -> str:
    """Log `frame` as predictions of the current champion (scored by it), labels back as feedback; one
    record a second, each phase after the one before (the window is the most recent records)."""
    _, _, model = champion_data(name)
    at = datetime.now(UTC) + timedelta(seconds=phase * len(frame))
    log_predictions(engine, frame, score(model, frame, config), config, name, model.version, at=at)
    return model.version


def test_drift_retrain_settles_and_a_new_drift_is_still_caught(loop_env, monkeypatch):
    tsettings = TrainingSettings.from_env()
    config = load_config(tsettings.dataset_config)
    train.train(tsettings)
    assert gate.main([]) == 0
    msettings = MonitorSettings.from_env()
    name = msettings.model_name
    engine = store.engine_for(msettings.database_url)
    _, test, _ = champion_data(name)
    pool = test.dropna().reset_index(drop=True)
    sample = [pool.sample(WINDOW, random_state=seed).reset_index(drop=True) for seed in (1, 2, 3)]

    # drift on v1: detected, one trigger
    serve(engine, apply(sample[0], FIRST, config, seed=1, reference=pool), config, name, 0)
    first = check.run_check(msettings, config, summary_table=False)
    assert first.status == "drift" and first.version == "1", first.line()
    assert first.trigger is not None and first.trigger.fired, first.line()

    # the retrain it triggers (what the local backend runs): v2 promoted, its reference is that window
    monkeypatch.setenv("RETRAIN_MONITORING_RUN_ID", str(first.run_id))
    assert retrain.main([]) == 0
    v2 = registry.version_by_alias(name, registry.CHAMPION)
    assert str(v2.version) == "2"
    assert v2.tags[registry.REFERENCE_TAG] == registry.PRODUCTION_REFERENCE_ARTIFACT
    assert v2.tags["reference_source"] == f"monitoring run {first.run_id}: {WINDOW} production records"

    # the same drifted traffic on v2: ok, no trigger (the loop settles)
    serve(engine, apply(sample[1], FIRST, config, seed=2, reference=pool), config, name, 1)
    settled = check.run_check(msettings, config, summary_table=False)
    assert settled.version == "2" and settled.status == "ok", settled.line()
    assert settled.trigger is None, settled.line()

    # a new, different drift on top of it: detected against v2's reference, a second trigger
    drifted = apply(apply(sample[2], FIRST, config, seed=3, reference=pool), SECOND, config, seed=3)
    serve(engine, drifted, config, name, 2)
    second = check.run_check(msettings, config, summary_table=False)
    assert second.version == "2" and second.status == "drift", second.line()
    drifted_now = {f.feature for f in second.result.features if f.drifted}
    assert drifted_now & set(SECOND.features) and not drifted_now & set(FIRST.features), drifted_now
    assert second.trigger is not None and second.trigger.fired

    t = store.trigger_events
    with engine.connect() as conn:
        fired = conn.execute(sa.select(sa.func.count()).where(t.c.status == "fired")).scalar()
    assert fired == 2
