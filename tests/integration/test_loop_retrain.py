"""Retraining data: the original snapshot's rows plus the labelled production records (feedback joined
with the logged features), mapped back to the raw columns; schema violations, missing values and
replayed rows and missing values beyond the config's max_missing_share left out and counted; written as
a new snapshot whose parent is the original."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core import store as loop_store
from core.dataset import load_config
from monitoring.scenarios import Scenario, apply
from monitoring.settings import MonitorSettings
from tests.support.loop_helpers import champion_data, log_predictions, score
from training import retrain
from training.data import open_snapshot
from training.settings import TrainingSettings


@pytest.fixture
def store(champion_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # a fresh prediction log and data folder: the shared session store is only read
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'loop.db'}")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    return champion_env


def test_retraining_data_includes_the_feedback_rows(store):
    settings = TrainingSettings.from_env()
    config = load_config(settings.dataset_config)
    _, test, model = champion_data(store.model_name)
    test = test.dropna().reset_index(drop=True)  # (a few customers with tenure 0 have no total_charges)
    engine = loop_store.engine_for(MonitorSettings.from_env().database_url)

    replayed = test.iloc[:50]  # held-out records as they are: already in the original data
    drifted = apply(
        test.iloc[50:150], Scenario("covariate", ("monthly_charges", "tenure")), config, reference=test
    )
    unseen = apply(test.iloc[150:170], Scenario("unseen_category", ("payment_method",), share=1.0), config)
    # total_charges may be missing (max_missing_share 0.01): kept, still missing; tenure may not
    missing = apply(test.iloc[170:180], Scenario("missing", ("total_charges",), share=1.0), config)
    no_tenure = apply(test.iloc[200:205], Scenario("missing", ("tenure",), share=1.0), config)
    unlabelled = apply(test.iloc[180:200], Scenario("covariate", ("tenure",)), config, reference=test)
    for frame, fb in (
        (replayed, True),
        (drifted, True),
        (unseen, True),
        (missing, True),
        (no_tenure, True),
        (unlabelled, False),
    ):
        log_predictions(
            engine, frame, score(model, frame, config), config, store.model_name, store.version, feedback=fb
        )

    data = retrain.build_training_data(settings, config, MonitorSettings.from_env().database_url)
    base_rows = data.base.manifest["rows"]
    assert data.labelled == 185  # the unlabelled records are not training data
    assert data.left_out == {
        "outside the declared schema": 20,
        "already in the data (same features and label)": 50,
        retrain.MISSING_LEFT_OUT: 5,
    }
    assert data.added == 110 and len(data.frame) == base_rows + 110

    added = data.frame.iloc[base_rows:].reset_index(drop=True)
    assert added["total_charges"].isna().sum() == 10 and added["tenure"].notna().all()
    key = ["monthly_charges", "tenure"]
    got = added[added["total_charges"].notna()].sort_values(key, kind="stable").reset_index(drop=True)
    expected = drifted.sort_values(key, kind="stable").reset_index(drop=True)
    pd.testing.assert_series_equal(got["monthly_charges"], expected["monthly_charges"], check_names=False)
    assert (got[config.target] == expected["label"].map({1: "Yes", 0: "No"})).all()
    assert added["rownames"].min() > data.frame.iloc[:base_rows]["rownames"].max()
    assert list(data.frame.columns) == list(data.base.load().columns)

    assert retrain.main(["--dry-run"]) == 0
    pointer = (Path(settings.data_dir) / f"LATEST-{config.name}").read_text().strip()
    snap = open_snapshot(pointer, settings.data_dir)
    assert snap.manifest["parent"] == data.base.hash
    assert snap.manifest["rows"] == base_rows + 110
    assert "110 labelled production records" in snap.manifest["note"]


def test_nothing_new_means_no_retrain(store, capsys):
    assert retrain.main([]) == 0
    assert "nothing to retrain on" in capsys.readouterr().out
