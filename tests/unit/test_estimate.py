"""core.estimate: CBPE against the published method's formulas, its band on calibrated data, and the
calibration error."""

import numpy as np
import pytest
import yaml
from sklearn.metrics import auc, precision_score, recall_score, roc_auc_score

from core.dataset import ConfigError, load_config
from core.estimate import (
    estimate_performance,
    expected_calibration_error,
    expected_confusion,
    expected_roc_auc,
    fit_calibration_map,
    simulated_metrics,
)
from tests.conftest import REPO

# six records, calibrated: score = probability; threshold 0.5 flags the first three
P = np.array([0.9, 0.8, 0.6, 0.3, 0.2, 0.1])


def test_expected_confusion_matrix_by_hand():
    c = expected_confusion(P, P, 0.5)
    assert c == pytest.approx({"tp": 2.3, "fp": 0.7, "fn": 0.6, "tn": 2.4})
    e = estimate_performance(P, 0.5)
    assert e["recall"].value == pytest.approx(2.3 / 2.9)
    assert e["precision"].value == pytest.approx(2.3 / 3.0)


def test_expected_roc_auc_by_hand():
    # cumulated p (true positives) 0 .9 1.7 2.3 2.6 2.8 2.9, cumulated 1-p 0 .1 .3 .7 1.4 2.2 3.1:
    # trapezoids .045 + .26 + .8 + 1.715 + 2.16 + 2.565 = 7.545, over 2.9 * 3.1
    assert expected_roc_auc(P, P) == pytest.approx(7.545 / (2.9 * 3.1))
    assert estimate_performance(P, 0.5)["roc_auc"].value == pytest.approx(7.545 / (2.9 * 3.1))


def _nannyml_estimate_roc_auc(true_y_pred_proba, model_y_pred_proba):
    """nannyml/performance_estimation/confidence_based/metrics.py estimate_roc_auc (0.13), verbatim but
    for the type checks."""
    sorted_index = np.argsort(model_y_pred_proba)[::-1]
    model_y_pred_proba = model_y_pred_proba[sorted_index]
    true_y_pred_proba = true_y_pred_proba[sorted_index]
    tps = np.cumsum(true_y_pred_proba)
    fps = 1 + np.arange(len(true_y_pred_proba)) - tps
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    tps = np.round(tps, 5)
    fps = np.round(fps, 5)
    return auc(fps / fps[-1], tps / tps[-1])


def test_roc_auc_matches_nannyml_on_random_windows():
    rng = np.random.default_rng(3)
    for _ in range(10):
        scores = rng.random(300)
        probs = np.clip(scores + rng.normal(0, 0.05, 300), 0, 1)  # a calibration map that is not identity
        assert expected_roc_auc(probs, scores) == pytest.approx(
            _nannyml_estimate_roc_auc(probs, scores), abs=1e-4
        )


def test_tied_scores_move_together():
    # two records tied at 0.5: one cut, whatever their order
    p = np.array([0.9, 0.5, 0.5, 0.1])
    assert expected_roc_auc(p, p) == pytest.approx(expected_roc_auc(p[[0, 2, 1, 3]], p[[0, 2, 1, 3]]))


def test_simulated_metrics_are_the_realized_metrics_of_the_draws():
    rng = np.random.default_rng(5)
    p = rng.random(50)
    sims = simulated_metrics(p, p, 0.4, draws=3, seed=11)
    labels = np.random.default_rng(11).random((3, 50)) < p
    for i in range(3):
        y = labels[i].astype(int)
        assert sims["roc_auc"][i] == pytest.approx(roc_auc_score(y, p))
        assert sims["recall"][i] == pytest.approx(recall_score(y, p >= 0.4))
        assert sims["precision"][i] == pytest.approx(precision_score(y, p >= 0.4))


def _coverage(label_probability, seeds=60, n=400, mapping=None):
    """Share of windows whose band covers the realized value, per metric, and the mean absolute error;
    scores are Beta-distributed probabilities, labels drawn with `label_probability(scores)`."""
    covered = {"roc_auc": 0, "recall": 0, "precision": 0}
    errors = {k: [] for k in covered}
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        scores = rng.beta(0.8, 2.0, n)
        y = (rng.random(n) < label_probability(scores)).astype(int)
        probs = None if mapping is None else mapping(scores)
        est = estimate_performance(scores, 0.35, probs, draws=300, seed=seed)
        realized = {
            "roc_auc": roc_auc_score(y, scores),
            "recall": recall_score(y, scores >= 0.35),
            "precision": precision_score(y, scores >= 0.35),
        }
        for k, value in realized.items():
            covered[k] += est[k].covers(value)
            errors[k].append(abs(est[k].value - value))
    return {k: v / seeds for k, v in covered.items()}, {k: float(np.mean(v)) for k, v in errors.items()}


def test_band_covers_the_realized_value_when_calibrated():
    coverage, mae = _coverage(lambda p: p)
    assert min(coverage.values()) >= 0.85, coverage  # nominal 95%
    assert mae["roc_auc"] < 0.03, mae


def test_band_misses_when_the_probabilities_are_not_calibrated():
    # labels from p**2: the model overstates every risk; the estimate is biased and the band says so
    coverage, _ = _coverage(lambda p: p**2)
    assert coverage["precision"] < 0.5, coverage


def test_a_calibration_map_from_a_reference_sample_restores_the_band():
    # the same overconfident model (labels from p**2), its map fitted on labelled reference records (as
    # the monitor fits one on the champion's reference sample)
    rng = np.random.default_rng(99)
    _, raw_mae = _coverage(lambda p: p**2)
    for n, least in ((3000, 0.65), (20000, 0.85)):
        ref_scores = rng.beta(0.8, 2.0, n)
        mapping = fit_calibration_map((rng.random(n) < ref_scores**2).astype(int), ref_scores)
        assert np.all(np.diff(mapping(np.linspace(0, 1, 50))) >= 0)  # monotone
        assert mapping(np.array([0.5]))[0] == pytest.approx(0.25, abs=0.08)
        coverage, mae = _coverage(lambda p: p**2, mapping=mapping)
        # the band counts which records churn, not the map's own error: a small reference sample
        # lowers the coverage (precision 72% at 3000 records, 95% at 20000)
        assert min(coverage.values()) >= least, (n, coverage)
        assert mae["precision"] < raw_mae["precision"] / 3, (mae, raw_mae)


def test_calibration_map_round_trips_through_json():
    mapping = fit_calibration_map([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.6, 0.9])
    again = type(mapping).from_dict(mapping.as_dict())
    assert np.allclose(again(np.linspace(0, 1, 11)), mapping(np.linspace(0, 1, 11)))


def test_calibration_error_known_cases():
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.2, 0.2, 0.8, 0.8]), bins=2) == pytest.approx(0.2)
    assert expected_calibration_error(y, np.array([0.5, 0.5, 0.5, 0.5]), bins=1) == pytest.approx(0.0)
    # bins of 2 sorted by probability: |0 - .15| and |1 - .65|, equal weights
    p = np.array([0.1, 0.2, 0.6, 0.7])
    assert expected_calibration_error(y, p, bins=2) == pytest.approx((0.15 + 0.35) / 2)


def test_calibration_error_is_small_for_calibrated_labels_and_large_otherwise():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.sqrt(p)) > 0.1


# --------------------------------------------------------------------------- the data set config's `estimate:`
def _config_with(tmp_path, spec):
    raw = yaml.safe_load((REPO / "config" / "telco_churn.yaml").read_text())
    raw["estimate"] = spec
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_the_estimate_bounds_come_from_the_config(tmp_path):
    config = _config_with(tmp_path, {"max_drop": {"roc_auc": 0.05, "recall": 0}, "drift_needs_harm": True})
    assert config.estimate_max_drop == {"roc_auc": 0.05}  # 0: not judged
    assert config.drift_needs_harm
    assert _config_with(tmp_path, None).estimate_max_drop == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"max_drops": {}}, "estimate has unknown key"),
        ({"max_drop": {"f1": 0.1}}, "estimate.max_drop maps roc_auc, recall, precision"),
        ({"max_drop": {"roc_auc": 1.5}}, "estimate.max_drop values must be numbers from 0 to 1"),
        (
            {"max_drop": {"roc_auc": 0.05}, "drift_needs_harm": "yes"},
            "drift_needs_harm must be true or false",
        ),
        ({"drift_needs_harm": True}, "drift_needs_harm needs a bound in estimate.max_drop"),
    ],
)
def test_a_bad_estimate_bound_names_the_key(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        _config_with(tmp_path, spec)
