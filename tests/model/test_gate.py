"""The gate blocks bad models every time and leaves `champion` untouched."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from core import registry, rollout, store
from core.dataset import load_config
from training import gate, tracking
from training.data import latest_snapshot, split_data
from training.fit import xgb_pipeline
from training.settings import TrainingSettings


def _register(pipe, threshold: float, settings: TrainingSettings) -> str:
    """Log a given pipeline as a new challenger, with the same test set and reference as training."""
    config = load_config(settings.dataset_config)
    splits = split_data(latest_snapshot(config, settings.data_dir).load(), config)
    # the configured experiment, never MLflow's Default one: a SQLite store's experiment 0 keeps its
    # artifacts in ./mlruns of the folder the store was created from (the repository under `make test`)
    experiment_id = registry.configure(settings.tracking_uri, settings.experiment, settings.artifact_root)
    with mlflow.start_run(experiment_id=experiment_id, run_name="deliberately-bad"):
        return tracking.log_model_version(
            pipe,
            config,
            settings,
            threshold=threshold,
            sample=splits.X["train"].head(50),
            test_set=splits.X["test"].assign(label=splits.y["test"].to_numpy()),
            reference=splits.X["valid"].head(50),
            tags={"purpose": "test"},
            metadata={},
        )


def _fit(settings, labels_fn):
    config = load_config(settings.dataset_config)
    splits = split_data(latest_snapshot(config, settings.data_dir).load(), config)
    params = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1}
    pipe = xgb_pipeline(config, params, settings.seed, settings.threads)
    return pipe.fit(splits.X["train"], labels_fn(splits.y["train"].to_numpy(), splits.X["train"]))


BAD_MODELS = {
    # kind: (label transform, name of a check that must fail)
    "shuffled labels": (lambda y, X, rng: rng.permutation(y), "floor: roc_auc"),
    "inverted labels": (lambda y, X, rng: 1 - y, "floor: roc_auc"),
    # learns the opposite of the contract effect: monthly contracts look loyal
    "reversed contract effect": (
        lambda y, X, rng: np.where(X["contract"] == "Month-to-month", 0, y | (X["tenure"] < 40)),
        "directional: contract -> Two year decreases score",
    ),
    # trained on data where most female churners were never recorded: finds fewer of them
    "biased against women": (
        lambda y, X, rng: np.where((X["female"] == 1) & (rng.random(len(y)) < 0.8), 0, y),
        "fairness: recall gap by female",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_gate_blocks_a_bad_model(champion_env, capsys, kind):
    settings = TrainingSettings.from_env()
    before = str(registry.version_by_alias(settings.model_name, registry.CHAMPION).version)
    relabel, must_fail = BAD_MODELS[kind]
    rng = np.random.default_rng(0)
    pipe = _fit(settings, lambda y, X: relabel(y, X, rng))
    version = _register(pipe, 0.3, settings)
    assert gate.main([]) == 1
    out = capsys.readouterr().out
    assert "verdict: FAILED" in out and f"challenger v{version}" in out
    report = json.loads((settings.reports_dir / f"gate-{settings.model_name}-v{version}.json").read_text())
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert must_fail in failed, failed
    assert str(registry.version_by_alias(settings.model_name, registry.CHAMPION).version) == before
    assert mlflow.MlflowClient().get_model_version(settings.model_name, version).tags["gate"] == "failed"


def test_gate_compares_with_the_champion_and_rolls_back(champion_env, capsys):
    settings = TrainingSettings.from_env()
    champion = str(registry.version_by_alias(settings.model_name, registry.CHAMPION).version)
    threshold = float(registry.model_metadata(settings.model_name, champion)["threshold"])
    same = mlflow.sklearn.load_model(registry.model_uri(settings.model_name, champion))
    version = _register(same, threshold, settings)
    # why it exists (as training.retrain tags it): into the gate report and the promotion's audit reason
    mlflow.MlflowClient().set_model_version_tag(settings.model_name, version, "retrain_trigger", "new data")
    assert gate.main([]) == 0
    out = capsys.readouterr().out
    assert "vs champion: roc_auc" in out and "PASS" in out
    report = json.loads((settings.reports_dir / f"gate-{settings.model_name}-v{version}.json").read_text())
    assert report["why"]["retrain_trigger"] == "new data"
    # the calibration the monitor's estimate without labels rests on: measured, judged, reported
    (calibration,) = [c for c in report["checks"] if c["name"] == "calibration: expected calibration error"]
    ece = report["challenger_metrics"]["calibration_error"]
    assert (
        calibration["passed"]
        and 0 < ece <= 0.05
        and float(calibration["value"]) == pytest.approx(ece, abs=1e-4)
    )
    assert report["champion_metrics"]["calibration_error"] == pytest.approx(ece)
    # the same model as the champion: full agreement on the test split, kept for the guard's bounds
    tagged = registry.get_version(settings.model_name, version)
    assert registry.gate_agreement(tagged, champion) == report["agreement"]
    assert report["agreement"]["rank_agreement"] == pytest.approx(1.0)
    assert report["agreement"]["disagreement"] == 0.0 and report["agreement"]["n"] > 500
    assert registry.gate_agreement(tagged, "999") is None  # measured against another version only
    promotion = registry.champion_history(settings.model_name)[-1]
    assert promotion["to_version"] == version
    assert promotion["reason"].startswith("gate passed; retrained for new data (")
    # the champion timeline has the same move, written under the alias lock
    last = store.last_champion_move(store.engine_for(settings.database_url), settings.model_name)
    assert (last["kind"], last["from_version"], last["to_version"]) == ("promotion", champion, version)
    assert last["reason"] == promotion["reason"] and last["details"]["why"]["retrain_trigger"] == "new data"
    assert str(registry.version_by_alias(settings.model_name, registry.CHAMPION).version) == version
    assert registry.previous_champion(settings.model_name) == champion
    move = registry.rollback(settings.model_name, reason="test")
    assert (move.from_version, move.to_version) == (version, champion)
    assert str(registry.version_by_alias(settings.model_name, registry.CHAMPION).version) == champion
    with pytest.raises(registry.RegistryError, match="has no version '999'"):
        registry.rollback(settings.model_name, to_version=999)
    assert [m["to_version"] for m in registry.champion_history(settings.model_name)][-2:] == [
        version,
        champion,
    ]


def test_gate_without_a_challenger_exits_2(embedded_env, capsys):
    assert gate.main([]) == 2
    assert "no 'challenger' alias" in capsys.readouterr().err


def test_a_blocked_version_is_refused_as_blocked_even_while_another_move_holds_the_lock(champion_env, caplog):
    settings = TrainingSettings.from_env()
    champion = str(registry.version_by_alias(settings.model_name, registry.CHAMPION).version)
    same = mlflow.sklearn.load_model(registry.model_uri(settings.model_name, champion))
    threshold = float(registry.model_metadata(settings.model_name, champion)["threshold"])
    version = _register(same, threshold, settings)
    registry.block(settings.model_name, version, reason="rolled back by the guard (test)", by="guard")
    engine = store.engine_for(settings.database_url)
    # the guard's own rollback still holds the move lock: the refusal must name the block, not the lock
    with rollout.alias_lock(engine, settings.model_name, "guard", "guard rollback", hold_seconds=60):
        code = gate.main(["--version", version, "--force", "--reason", "again", "--by", "test"])
    assert code == 1
    assert "is blocked by guard" in caplog.text and "in progress" not in caplog.text
    assert str(registry.version_by_alias(settings.model_name, registry.CHAMPION).version) == champion
