"""Drift detection on a real trained champion with the bounds calibrated by its training run: each injected
scenario is detected, one important feature's shift alone is detected, and fresh undrifted windows alarm at
the calibrated rate (200 windows; the rate is reported and must be consistent with the 5% target).

Windows are random samples of MONITOR_MIN_WINDOW (200, the smallest window the monitor judges) from the
held-out test split, scored by the champion, against the reference sample logged with its run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from core import registry
from core.dataset import load_config
from core.drift import Calibration
from monitoring.drift import compute_drift
from monitoring.scenarios import Scenario, apply
from monitoring.settings import MonitorSettings
from tests.support.loop_helpers import champion_data, score
from training.settings import TrainingSettings

UNDRIFTED_WINDOWS = 200


@pytest.fixture(scope="module")
def world(trained_champion):
    import mlflow

    mlflow.set_tracking_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    config = load_config(TrainingSettings.from_env().dataset_config)
    reference, test, model = champion_data(trained_champion.model_name)
    run_id = registry.version_by_alias(trained_champion.model_name, registry.CHAMPION).run_id
    calibration = Calibration.from_dict(registry.drift_calibration(run_id))
    return config, reference, test, model, calibration


def check(world, frame, report: bool = False):
    config, reference, _, model, calibration = world
    settings = MonitorSettings.from_env()
    window = frame.assign(score=score(model, frame, config))
    return compute_drift(
        reference,
        window,
        config,
        settings.drift,
        settings.quality,
        model.threshold,
        calibration=calibration,
        summary_table=False,
        report=report,
    )


def test_false_alarm_rate_on_undrifted_windows(world, record_property, capsys):
    _, _, test, _, calibration = world
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
    target = calibration.policy.false_alarm_rate
    # consistent with the calibrated target: not significantly above it (one-sided binomial test, 1%)
    assert binomtest(alarms, UNDRIFTED_WINDOWS, target, alternative="greater").pvalue > 0.01, reasons


SCENARIOS = {
    "covariate": Scenario("covariate", ("monthly_charges", "tenure"), strength=1.0),
    "covariate_categorical": Scenario("covariate", ("contract", "internet_service"), strength=1.6),
    "unseen_category": Scenario("unseen_category", ("payment_method",), share=0.2),
    "missing": Scenario("missing", ("total_charges",), share=0.3),
    "label_shift": Scenario("label_shift", share=0.6),
}
# one feature alone (issue 17: missed by the share rule), in windows of 300: a 1 sd shift of the most
# important numeric feature, a 20% move of the most important categorical or binary one and of the fifth
ONE_FEATURE = ("top_numeric_1sd", "top_categorical_20pct", "fifth_20pct")


def one_feature(name: str, calibration: Calibration, config) -> Scenario:
    top = calibration.top[:5]
    numeric = [f for f in top if config.feature(f).type == "numeric"] or [
        f for f in calibration.importance if config.feature(f).type == "numeric"
    ]
    if name == "top_numeric_1sd":
        return Scenario("covariate", (numeric[0],), strength=1.0)
    if name == "top_categorical_20pct":
        return Scenario("move", (next(f for f in top if config.feature(f).type != "numeric"),), share=0.2)
    fifth = top[4]
    if config.feature(fifth).type == "numeric":
        return Scenario("covariate", (fifth,), strength=1.0)
    return Scenario("move", (fifth,), share=0.2)


@pytest.mark.parametrize("name", [*SCENARIOS, *ONE_FEATURE])
def test_each_scenario_is_detected(world, name, capsys):
    config, _, test, _, calibration = world
    size = 300 if name in ONE_FEATURE else MonitorSettings.from_env().min_window
    scenario = one_feature(name, calibration, config) if name in ONE_FEATURE else SCENARIOS[name]
    detected = []
    for seed in range(5):
        window = test.sample(size, random_state=100 + seed)
        result = check(world, apply(window, scenario, config, seed=seed, reference=test))
        detected.append(result.alarm)
        if name in ONE_FEATURE:  # the alarm names the feature, its importance and the figure
            feature = scenario.features[0]
            assert any(r.startswith(f"{feature} (importance ") for r in result.reasons), result.reasons
    with capsys.disabled():
        print(f"\n{name}: detected in {sum(detected)}/5 windows; e.g. {result.reasons[:2]}")
    assert all(detected), f"{name}: detected in {sum(detected)}/5 windows"


def test_each_score_carries_method_and_threshold(world):
    _, _, test, _, _ = world
    result = check(world, test.sample(200, random_state=3), report=True)
    details = result.details()
    for feature in details["features"]:
        assert feature["method"] and feature["threshold"] > 0 and feature["score"] is not None
    assert details["prediction"]["method"] == "wasserstein"
