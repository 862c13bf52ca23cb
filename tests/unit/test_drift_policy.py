"""The drift alarm policy (core.drift) and its calibration (training.drift_calibration) on generated data:
one important feature shifted strongly alarms and names it, many features shifted weakly alarm through
the importance-weighted share, an unimportant feature's shift alone does not alarm, undrifted windows
alarm at about the calibrated rate; the calibration's fast distances equal the monitor's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from core.dataset import ConfigError, load_config
from core.drift import SCORE, Calibration, DriftPolicy, judge, window_scores
from monitoring.scenarios import Scenario, apply
from training.drift_calibration import _Column, calibrate

CONFIG = load_config("config/telco_churn.yaml")
# importance as a trained model has it: a few features carry most of it
IMPORTANCE = {
    "contract": 0.30,
    "internet_service": 0.20,
    "tenure": 0.15,
    "online_security": 0.08,
    "monthly_charges": 0.07,
    "tech_support": 0.05,
    "payment_method": 0.04,
    "total_charges": 0.03,
    "paperless_billing": 0.02,
    "partner": 0.05,
    "female": 0.01,
}


def population(n: int, rng: np.random.Generator) -> pd.DataFrame:
    out = {}
    for f in CONFIG.features:
        if f.type == "binary":
            out[f.name] = (rng.random(n) < 0.35).astype(int)
        elif f.type == "categorical":
            k = len(f.categories)
            p = np.arange(k, 0, -1, dtype=float) / sum(range(1, k + 1))  # unequal shares
            out[f.name] = rng.choice(list(f.categories), size=n, p=p)
    out["tenure"] = rng.integers(0, 73, n).astype(float)
    out["monthly_charges"] = np.clip(rng.normal(65, 30, n), 18, 120).round(2)
    out["total_charges"] = (out["tenure"] * out["monthly_charges"]).round(2)
    return pd.DataFrame(out)


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    z = (
        1.5 * (frame["contract"] == "Month-to-month")
        + 0.8 * (frame["internet_service"] == "Fiber optic")
        - 0.03 * frame["tenure"]
        + 0.01 * frame["monthly_charges"]
        - 1.0
    )
    return frame.assign(score=1 / (1 + np.exp(-z)))


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(11)
    reference = scored(population(1000, rng))
    calibration = calibrate(
        reference, IMPORTANCE, CONFIG, replace(DriftPolicy.from_mapping(CONFIG.drift), top_k=5)
    )
    return reference, calibration


def fresh(size: int, seed: int, scenario: Scenario | None = None, reference=None) -> pd.DataFrame:
    window = population(size, np.random.default_rng(seed))
    if scenario is not None:
        window = apply(window, scenario, CONFIG, seed=seed, reference=reference)
    return scored(window)


def verdict(world, window):
    reference, calibration = world
    return judge(window_scores(reference, window, CONFIG), calibration, len(window))


def test_one_important_feature_shifted_alarms_and_names_it(world):
    reference, calibration = world
    for seed in range(5):
        v = verdict(
            world, fresh(300, 1000 + seed, Scenario("move", ("internet_service",), share=0.2), reference)
        )
        assert v.level == "alarm"
        reason = next(f.reason for f in v.findings if f.kind == "feature:internet_service")
        # the feature, its importance and rank, the figure and the bound it crossed
        assert reason.startswith("internet_service (importance 0.20, #2): jensenshannon ")
        figure, bound = reason.split("jensenshannon ")[1].split(" > alarm bound ")
        assert (
            float(figure)
            > float(bound)
            == pytest.approx(calibration.bounds(300).alarm["internet_service"], abs=1e-3)
        )


def test_numeric_shift_of_one_sd_in_a_top_feature_alarms(world):
    reference, _ = world
    hits = [
        verdict(
            world, fresh(300, 2000 + s, Scenario("covariate", ("monthly_charges",), 1.0), reference)
        ).level
        for s in range(5)
    ]
    assert hits == ["alarm"] * 5


def test_many_weak_shifts_alarm_through_the_weighted_share(world):
    reference, calibration = world
    weak = ("contract", "internet_service", "online_security", "tech_support", "payment_method")
    levels, kinds = [], []
    for seed in range(5):
        window = fresh(500, 3000 + seed, Scenario("move", weak, share=0.06), reference)
        window = apply(
            window, Scenario("covariate", ("tenure", "monthly_charges"), 0.2), CONFIG, reference=reference
        )
        v = verdict(world, scored(window))
        levels.append(v.level)
        kinds += v.kinds()
        # no single feature is past its own alarm bound: the weighted share is what alarms
        assert v.weighted_share > v.bounds.weighted_share["alarm"]
    assert levels.count("alarm") >= 4 and "weighted_share" in kinds


def test_an_unimportant_feature_alone_does_not_alarm(world):
    reference, _ = world
    for seed in range(5):
        v = verdict(world, fresh(300, 4000 + seed, Scenario("move", ("female",), share=0.4), reference))
        assert "female" in v.drifted  # seen as drifted (the shares, the report) ...
        assert not any(k == "feature:female" for k in v.kinds("alarm"))  # ... but it does not matter


def test_undrifted_windows_alarm_at_about_the_calibrated_rate(world):
    _, calibration = world
    for size in (250, 500):  # 250: between two calibrated sizes, the bounds are interpolated
        levels = [verdict(world, fresh(size, 10_000 * size + s)).level for s in range(200)]
        alarms = levels.count("alarm") / len(levels)
        warnings = alarms + levels.count("warning") / len(levels)
        # target 5% (warning 20%); 200 windows: a binomial sd of 1.5% (2.8%)
        assert alarms <= calibration.policy.false_alarm_rate + 0.03, (size, alarms)
        assert warnings <= calibration.policy.warning_rate + 0.06, (size, warnings)
        assert warnings > alarms  # the warning level is looser


def test_calibration_distances_equal_the_monitors(world):
    reference, _ = world
    rng = np.random.default_rng(5)
    win, ref = rng.integers(0, len(reference), (3, 200)), rng.integers(0, len(reference), (3, len(reference)))
    for name, kind in [*((f.name, f.type) for f in CONFIG.features), (SCORE, "numeric")]:
        col = _Column(reference[name], kind)
        fast = col.distance(win, col.shares(ref))
        for i in range(3):
            scores = window_scores(reference.iloc[ref[i]], reference.iloc[win[i]], CONFIG)
            assert fast[i] == pytest.approx(scores[name], rel=1e-9, abs=1e-12), name


def test_bounds_shrink_with_the_window_and_round_trip(world):
    _, calibration = world
    b200, b250, b300, b500 = (calibration.bounds(n) for n in (200, 250, 300, 500))
    for f in calibration.top:
        assert b200.alarm[f] >= b250.alarm[f] >= b300.alarm[f] >= b500.alarm[f] > 0
        assert b300.alarm[f] > b300.warning[f] > 0
    again = Calibration.from_dict(calibration.as_dict())
    assert again.bounds(250) == b250 and again.top == calibration.top
    assert list(calibration.importance)[:3] == ["contract", "internet_service", "tenure"]


def test_uncalibrated_champions_keep_the_static_thresholds():
    static = Calibration.static(
        CONFIG,
        DriftPolicy(),
        IMPORTANCE,
        num_threshold=0.2,
        cat_threshold=0.1,
        score_threshold=0.2,
        share_threshold=0.1,
    )
    scores = dict.fromkeys(CONFIG.feature_names, 0.0) | {"female": 0.15, "partner": 0.15, SCORE: 0.05}
    v = judge(scores, static, 300)
    assert v.level == "alarm" and v.kinds() == ["drift_share"]  # two of 19: the old share rule
    v = judge(dict.fromkeys(CONFIG.feature_names, 0.0) | {"contract": 0.12, SCORE: 0.05}, static, 300)
    assert "feature:contract" in v.kinds()


def test_policy_comes_from_the_config(tmp_path):
    assert DriftPolicy.from_mapping(CONFIG.drift).top_k == 10
    text = CONFIG.path.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  top_k: 10", "  top_k: 50"))
    with pytest.raises(ConfigError, match="drift.top_k"):
        load_config(bad)
    bad.write_text(text.replace("  top_k: 10", "  topk: 10"))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(bad)
    policy = replace(DriftPolicy.from_mapping(CONFIG.drift), window_sizes=(300,))
    assert policy.window_sizes == (300,)


def test_the_monitors_evidently_report_shows_the_same_distances(world):
    from monitoring.drift import compute_drift
    from monitoring.settings import MonitorSettings

    reference, calibration = world
    defaults = MonitorSettings.from_env()
    window = fresh(300, 77, Scenario("covariate", ("tenure",), 1.0), reference)
    result = compute_drift(
        reference,
        window,
        CONFIG,
        defaults.drift,
        defaults.quality,
        0.5,
        calibration=calibration,
        summary_table=False,
    )
    evidently = {
        item["config"]["column"]: item["value"]
        for item in result.report.dict()["metrics"]
        if item["config"]["type"].endswith(":ValueDrift")
    }
    for f in result.features:
        assert f.score == pytest.approx(evidently[f.feature], rel=1e-6), f.feature
        assert f.threshold == calibration.bounds(300).drifted[f.feature]
    assert result.prediction_score == pytest.approx(evidently[SCORE], rel=1e-6)
    assert result.alarm and result.kinds[0] == "feature:tenure" and result.level == "alarm"
    assert "Drift policy: ALARM" in result.policy_html() and "tenure" in result.policy_html()
