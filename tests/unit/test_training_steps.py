"""The training steps on small data, without MLflow: the held-out measures of a candidate, the choice,
the evaluation report, the Optuna progress lines, and the command-line log output."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import FrozenInstanceError

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from core import logs
from core.dataset import load_config
from core.settings import REPO_ROOT
from training import evaluate, fit
from training.candidate import Candidate
from training.data import Splits, read_source, split_data
from training.evaluate import choose_threshold
from training.settings import TrainingSettings


class ColumnScorer:
    """A stand-in for a fitted pipeline: the score of a row is its column `s`."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        s = X["s"].to_numpy(dtype=float)
        return np.column_stack([1 - s, s])


def _splits(valid: tuple[list, list], test: tuple[list, list]) -> Splits:
    frames = {"train": ([0.5], [0]), "valid": valid, "test": test}
    return Splits(
        X={k: pd.DataFrame({"s": v[0]}) for k, v in frames.items()},
        y={k: pd.Series(v[1]) for k, v in frames.items()},
    )


class Costs:
    fp_cost, fn_cost = 1.0, 3.0


def test_threshold_comes_from_the_valid_split_and_metrics_from_the_test_split():
    # valid: the cheapest cut is at 0.6 (3 misses cost 3 each); test: at the valid threshold 0.6,
    # 0.7 and 0.65 are flagged (one right, one wrong) and 0.55 (a churner) is missed
    splits = _splits(
        valid=([0.9, 0.8, 0.6, 0.3, 0.2, 0.1], [1, 1, 1, 0, 0, 0]),
        test=([0.7, 0.65, 0.55, 0.1], [1, 0, 1, 0]),
    )
    measured = evaluate.measure(Candidate("stub", ColumnScorer(), {}), splits, Costs)
    held = measured.measured
    assert held.threshold == choose_threshold(
        np.array([1, 1, 1, 0, 0, 0]), np.array([0.9, 0.8, 0.6, 0.3, 0.2, 0.1]), 1.0, 3.0
    )
    assert held.threshold == 0.6
    assert (held.test["tp"], held.test["fp"], held.test["fn"], held.test["tn"]) == (1, 1, 1, 1)
    assert held.test["n"] == 4
    assert held.test["cost_per_customer"] == pytest.approx((1.0 * 1 + 3.0 * 1) / 4)
    assert held.valid_pr_auc == pytest.approx(1.0)  # the valid scores separate the classes
    np.testing.assert_array_equal(held.test_scores, [0.7, 0.65, 0.55, 0.1])
    np.testing.assert_array_equal(held.valid_scores, [0.9, 0.8, 0.6, 0.3, 0.2, 0.1])


def test_measure_returns_a_new_candidate_and_keeps_what_fit_knew():
    splits = _splits(valid=([0.9, 0.1], [1, 0]), test=([0.8, 0.2], [1, 0]))
    fitted = Candidate("xgboost", ColumnScorer(), {"max_depth": 3}, run_id="r1", cv_pr_auc=0.7)
    measured = evaluate.measure(fitted, splits, Costs)
    assert fitted.held_out is None and measured.held_out is not None
    assert (measured.name, measured.params, measured.run_id, measured.cv_pr_auc) == (
        "xgboost",
        {"max_depth": 3},
        "r1",
        0.7,
    )
    with pytest.raises(FrozenInstanceError):
        measured.threshold = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match="not been evaluated"):
        _ = fitted.measured


def _measured(name: str, valid_scores: list[float], valid_y: list[int]) -> Candidate:
    held = evaluate.held_out_measures(valid_y, np.array(valid_scores), [1, 0], np.array([0.9, 0.1]), 1.0, 1.0)
    return Candidate(name, ColumnScorer(), {}, held_out=held)


def test_choose_takes_the_best_validation_pr_auc_and_the_first_on_a_tie(caplog):
    good = _measured("xgboost", [0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])
    poor = _measured("logreg", [0.9, 0.2, 0.8, 0.1], [1, 1, 0, 0])
    assert poor.measured.valid_pr_auc < good.measured.valid_pr_auc
    with caplog.at_level(logging.INFO, logger="training"):
        assert evaluate.choose([poor, good]) is good
    assert caplog.messages[-1].startswith("chosen: xgboost (valid PR AUC 1.0000 vs logreg ")
    twin = _measured("xgboost", [0.9, 0.2, 0.8, 0.1], [1, 1, 0, 0])
    assert evaluate.choose([poor, twin]) is poor


@pytest.fixture(scope="module")
def small():
    """600 rows of the real data set, split as training splits them."""
    config = load_config(REPO_ROOT / "config" / "telco_churn.yaml")
    frame = read_source(config).sample(600, random_state=0)
    return config, split_data(frame, config)


def test_baseline_steps_end_to_end_without_mlflow(small, tmp_path):
    config, splits = small
    baseline = fit.fit_baseline(config, splits, seed=1, run_id="run-1")
    assert (baseline.name, baseline.run_id, baseline.params) == ("logreg", "run-1", fit.BASELINE_PARAMS)
    model = baseline.pipeline.named_steps["model"]
    assert (model.C, model.max_iter, model.random_state) == (1.0, 2000, 1)
    measured = evaluate.measure(baseline, splits, config)
    expected = average_precision_score(
        splits.y["valid"], baseline.pipeline.predict_proba(splits.X["valid"])[:, 1]
    )
    assert measured.measured.valid_pr_auc == pytest.approx(expected)
    assert measured.measured.test["n"] == len(splits.y["test"])

    report = evaluate.report(measured, [measured], splits, config)
    assert report.importance.sum() == pytest.approx(1.0)
    assert set(report.importance.index) <= set(config.feature_names)
    report.write(tmp_path)
    body = json.loads((tmp_path / "evaluation.json").read_text())
    assert body["chosen"] == "logreg" and body["threshold"] == measured.measured.threshold
    assert body["candidates"]["logreg"]["test"] == measured.measured.test
    assert body["best_params"] == {} and body["cv_pr_auc"] is None  # nothing was tuned
    assert set(body["segment_gaps"]) == set(config.segments)
    assert (tmp_path / "plots" / "curves.png").is_file()
    assert (tmp_path / "segment_metrics.csv").is_file() and (tmp_path / "feature_importance.csv").is_file()


def test_trial_progress_logs_one_line_per_trial_with_value_best_and_elapsed(caplog):
    ticks = iter(range(0, 100, 5))  # the clock advances 5 s per reading
    progress = fit.TrialProgress(4, clock=lambda: float(next(ticks)))
    values = iter([0.2, 0.5, 0.4, 0.6])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    with caplog.at_level(logging.INFO, logger="training"):
        study.optimize(lambda trial: next(values), n_trials=4, callbacks=[progress])
    lines = [r.getMessage() for r in caplog.records if r.name == "training.fit"]
    assert lines == [
        "  tuning trial 1/4: cv PR AUC 0.2000 (best 0.2000 at trial 1), 5.0 s",
        "  tuning trial 2/4: cv PR AUC 0.5000 (best 0.5000 at trial 2), 10.0 s",
        "  tuning trial 3/4: cv PR AUC 0.4000 (best 0.5000 at trial 2), 15.0 s",
        "  tuning trial 4/4: cv PR AUC 0.6000 (best 0.6000 at trial 4), 20.0 s",
    ]


def test_trial_progress_reports_a_failed_trial_without_a_best(caplog):
    progress = fit.TrialProgress(2, clock=lambda: 0.0)
    study = optuna.create_study(direction="maximize")

    def objective(trial):
        raise ArithmeticError("diverged")

    with caplog.at_level(logging.INFO, logger="training"):
        study.optimize(objective, n_trials=1, callbacks=[progress], catch=(ArithmeticError,))
    assert [r.getMessage() for r in caplog.records if r.name == "training.fit"] == [
        "  tuning trial 1/2: fail (no complete trial yet), 0.0 s"
    ]


def test_tuning_is_seeded_logs_each_trial_and_silences_optunas_own_lines(small, caplog):
    config, splits = small
    settings = TrainingSettings(optuna_trials=2, cv_folds=2, seed=3, threads=1)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    with caplog.at_level(logging.INFO, logger="training"):
        first = fit.tune_xgb(config, splits.X["train"], splits.y["train"], settings)
    assert not logging.getLogger("optuna").isEnabledFor(logging.INFO)
    lines = [r.getMessage() for r in caplog.records if r.name == "training.fit"]
    assert lines[0] == "tuning XGBoost: 2 trials x 2-fold CV"
    assert [line.split(":")[0] for line in lines[1:]] == ["  tuning trial 1/2", "  tuning trial 2/2"]
    again = fit.tune_xgb(config, splits.X["train"], splits.y["train"], settings)
    assert again == first
    assert set(first.best_params) == {
        "n_estimators",
        "max_depth",
        "learning_rate",
        "subsample",
        "colsample_bytree",
        "min_child_weight",
        "reg_lambda",
    }


@pytest.fixture
def console():
    """setup_logging changes the root logger and the project's loggers: put them back afterwards."""
    root = logging.getLogger()
    loggers = [logging.getLogger(p) for p in logs.PACKAGES]
    handlers, levels = list(root.handlers), [root.level, *(lg.level for lg in loggers)]
    yield
    root.handlers[:] = handlers
    for lg, level in zip([root, *loggers], levels, strict=True):
        lg.setLevel(level)


def test_cli_logging_info_to_stdout_errors_to_stderr_as_plain_lines(console, capsys):
    logs.setup_logging("INFO", plain="training")
    logs.setup_logging("INFO", plain="training")  # a second main() in the same process (retrain, gate)
    assert sum(isinstance(h, logs.ConsoleHandler) for h in logging.getLogger().handlers) == 1
    logging.getLogger("training.train").info("registered %s v%s", "m", 3)
    logging.getLogger("training.gate").error("error: %s", "no challenger")
    logging.getLogger("some.library").warning("careful")
    logging.getLogger("some.library").info("chatter")  # other libraries: WARNING and above only
    out, err = capsys.readouterr()
    assert out == "registered m v3\n"
    assert err == "error: no challenger\nWARNING some.library: careful\n"


def test_cli_logging_level_comes_from_the_setting(console, capsys):
    logs.setup_logging("WARNING", plain="training")
    logging.getLogger("training.fit").info("  tuning trial 1/2: ...")
    logging.getLogger("training.validate").error("validation failed: ...")
    out, err = capsys.readouterr()
    assert out == "" and err == "validation failed: ...\n"


def test_server_logging_is_timestamped_and_json_is_one_object_per_line(console, capsys):
    logs.setup_logging("INFO")
    logging.getLogger("monitoring.monitor").info("checked %d records", 300)
    out, _ = capsys.readouterr()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d [\d:,]+ INFO \[\d+\] monitoring\.monitor: checked 300 records\n", out
    ), out
    logs.setup_logging("DEBUG", "json")
    try:
        raise ValueError("bad row")
    except ValueError:
        logging.getLogger("scoring").exception("rejected %s", "row 7")
    _, err = capsys.readouterr()
    entry = json.loads(err)
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "scoring", "rejected row 7")
    assert "ValueError: bad row" in entry["exception"] and entry["time"].endswith("+00:00")
