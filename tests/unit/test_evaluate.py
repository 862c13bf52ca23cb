import numpy as np
import pandas as pd

from training.evaluate import choose_threshold, classification_metrics, segment_gaps, segment_metrics


def _cost(y, s, t, fp, fn):
    pred = s >= t
    return fp * np.sum(pred & (y == 0)) + fn * np.sum(~pred & (y == 1))


def test_threshold_minimises_cost_like_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 300)
        s = np.clip(y * 0.3 + rng.normal(0.4, 0.25, 300), 0, 1).round(2)  # ties on purpose
        fp, fn = rng.uniform(1, 10), rng.uniform(1, 10)
        t = choose_threshold(y, s, fp, fn)
        best = min(_cost(y, s, c, fp, fn) for c in [*np.unique(s), np.inf])
        assert np.isclose(_cost(y, s, t, fp, fn), best)


def test_expensive_misses_lower_the_threshold():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1000)
    s = np.clip(y * 0.35 + rng.normal(0.3, 0.2, 1000), 0, 1)
    assert choose_threshold(y, s, 1, 10) < choose_threshold(y, s, 1, 1) < choose_threshold(y, s, 10, 1)


def test_metrics_confusion_counts():
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.2, 0.8, 0.1, 0.6])
    m = classification_metrics(y, s, 0.5, fp_cost=2, fn_cost=5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 1)
    assert np.isclose(m["recall"], 2 / 3) and np.isclose(m["precision"], 2 / 3)
    assert np.isclose(m["cost_per_customer"], (2 * 1 + 5 * 1) / 5)


def test_segment_gap_is_max_minus_min():
    features = pd.DataFrame({"g": ["a", "a", "b", "b"]})
    table = segment_metrics(features, [1, 0, 1, 0], [0.9, 0.1, 0.2, 0.1], 0.5, ["g"])
    assert table.set_index("segment").loc["a", "recall"] == 1.0
    assert table.set_index("segment").loc["b", "recall"] == 0.0
    assert segment_gaps(table)["g"]["recall"] == 1.0


def test_fairness_checks_judge_gaps_of_large_enough_segments():
    from training.gate import fairness_checks

    table = pd.DataFrame(
        [
            {"column": "female", "segment": "0", "n": 500, "recall": 0.90},
            {"column": "female", "segment": "1", "n": 480, "recall": 0.70},
            {"column": "senior", "segment": "0", "n": 900, "recall": 0.90},
            {"column": "senior", "segment": "1", "n": 10, "recall": 0.10},  # too small to judge
        ]
    )
    checks = {
        c.name: c
        for c in fairness_checks(table, {"columns": ["female", "senior"], "max_gap": {"recall": 0.1}})
    }
    assert not checks["fairness: recall gap by female"].passed
    assert checks["fairness: recall gap by female"].value == "0.2000"
    assert (
        checks["fairness: recall gap by senior"].passed
        and checks["fairness: recall gap by senior"].value == "n/a"
    )


def test_records_without_a_value_form_their_own_segment_not_nan():
    features = pd.DataFrame({"g": pd.Series(["a", np.nan, "a", None], dtype=object)})
    table = segment_metrics(features, [1, 0, 1, 1], [0.9, 0.1, 0.8, 0.2], 0.5, ["g"])
    assert table["segment"].tolist() == ["(missing)", "a"]
    assert table.set_index("segment").loc["(missing)", "n"] == 2


def test_the_calibration_axis_names_the_data_sets_positive_record(monkeypatch, tmp_path):
    from matplotlib.axes import Axes

    from training.evaluate import save_plots

    labels, original = [], Axes.set

    def spy(self, **kwargs):
        labels.append(kwargs.get("ylabel"))
        return original(self, **kwargs)

    monkeypatch.setattr(Axes, "set", spy)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    save_plots(y, np.clip(y * 0.5 + rng.random(200) * 0.5, 0, 1), 0.5, None, tmp_path, "closed")
    assert "observed closed rate" in labels and not any("churn" in str(label) for label in labels)


def test_metrics_carry_the_calibration_error():
    y = np.array([0, 0, 1, 1] * 5)
    s = np.array([0.2, 0.2, 0.8, 0.8] * 5)
    # 10 equal-count bins of 2 records sorted by score: five bins of (0, .2), five of (1, .8)
    assert np.isclose(classification_metrics(y, s, 0.5)["calibration_error"], 0.2)


def test_calibration_check_judges_the_bound_only_when_configured():
    from training.gate import calibration_checks

    assert calibration_checks({"calibration_error": 0.9}, {}, 100) == []
    (ok,) = calibration_checks({"calibration_error": 0.02}, {"max_error": 0.05}, 1096)
    (bad,) = calibration_checks({"calibration_error": 0.08}, {"max_error": 0.05}, 1096)
    assert ok.passed and ok.value == "0.0200" and ok.limit == "<= 0.05" and "1096 rows" in ok.detail
    assert not bad.passed
