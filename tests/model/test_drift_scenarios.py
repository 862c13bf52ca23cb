"""Drift detection on a real trained champion: each injected scenario is detected, fresh undrifted windows
are not (false-alarm rate over 40 windows at most 5%, reported), with the default thresholds.

Windows are random samples of MONITOR_MIN_WINDOW (200, the smallest window the monitor judges) from the
held-out test split, scored by the champion, against the reference sample logged with its run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.dataset import load_config
from monitoring.drift import compute_drift
from monitoring.scenarios import Scenario, apply
from monitoring.settings import MonitorSettings
from tests.loop_helpers import champion_data, score
from training.settings import TrainingSettings

UNDRIFTED_WINDOWS = 40
MAX_FALSE_ALARM_RATE = 0.05


@pytest.fixture(scope="module")
def world(trained_champion):
    import mlflow

    mlflow.set_tracking_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    config = load_config(TrainingSettings.from_env().dataset_config)
    reference, test, model = champion_data(trained_champion.model_name)
    return config, reference, test, model


def check(world, frame):
    config, reference, _, model = world
    settings = MonitorSettings.from_env()
    window = frame.assign(score=score(model, frame, config))
    return compute_drift(
        reference, window, config, settings.drift, settings.quality, model.threshold, summary_table=False
    )


def test_false_alarm_rate_on_undrifted_windows(world, record_property, capsys):
    _, _, test, _ = world
    size = MonitorSettings.from_env().min_window
    rng = np.random.default_rng(7)
    alarms, shares, reasons = 0, [], []
    for _ in range(UNDRIFTED_WINDOWS):
        window = test.sample(size, random_state=int(rng.integers(2**31)))
        result = check(world, window)
        alarms += result.alarm
        shares.append(result.drift_share)
        reasons += result.reasons
    rate = alarms / UNDRIFTED_WINDOWS
    record_property("false_alarm_rate", rate)
    with capsys.disabled():
        print(
            f"\nfalse-alarm rate: {alarms}/{UNDRIFTED_WINDOWS} = {rate:.1%} (windows of {size}; "
            f"max drift share {max(shares):.3f}); reasons: {json.dumps(reasons)[:300]}"
        )
    assert rate <= MAX_FALSE_ALARM_RATE, reasons


SCENARIOS = {
    "covariate": Scenario("covariate", ("monthly_charges", "tenure"), strength=1.0),
    "covariate_categorical": Scenario("covariate", ("contract", "internet_service"), strength=1.6),
    "unseen_category": Scenario("unseen_category", ("payment_method",), share=0.2),
    "missing": Scenario("missing", ("total_charges",), share=0.3),
    "label_shift": Scenario("label_shift", share=0.6),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_scenario_is_detected(world, name, capsys):
    _, _, test, _ = world
    size = MonitorSettings.from_env().min_window
    detected = []
    for seed in range(5):
        window = test.sample(size, random_state=100 + seed)
        result = check(world, apply(window, SCENARIOS[name], world[0], seed=seed, reference=test))
        detected.append(result.alarm)
    with capsys.disabled():
        print(f"\n{name}: detected in {sum(detected)}/5 windows; e.g. {result.reasons[:2]}")
    assert all(detected), f"{name}: detected in {sum(detected)}/5 windows"


def test_each_score_carries_method_and_threshold(world):
    _, _, test, _ = world
    result = check(world, test.sample(200, random_state=3))
    details = result.details()
    for feature in details["features"]:
        assert feature["method"] and feature["threshold"] > 0 and feature["score"] is not None
    assert details["prediction"]["method"] == "wasserstein"
