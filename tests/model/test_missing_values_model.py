"""Issue 12: a data set with missing values (tests/support/missing_data.py, generated) trains, gates and serves
with its missing values kept missing: a missing category is the encoder's `__missing__` column (never
a "nan" category), missingness is learned, and a record with nulls scores the same through the
pipeline, the service's fast path and its HTTP API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from core import registry
from core.dataset import DatasetConfig, load_config
from core.features import coerce_features, original_feature
from tests.conftest import embedded_env_vars
from tests.support.missing_data import write_dataset

pytestmark = pytest.mark.slow

MODEL = "accounts-model"
API_KEY = "missing-values-test-key"
REPO_CARDS = Path(__file__).resolve().parents[2] / "docs" / "model_cards"
RECORD_WITH_NULLS = {"age": 63, "balance": None, "plan": "basic", "region": None}


@dataclass(frozen=True)
class Trained:
    root: Path
    env: dict[str, str]
    config: DatasetConfig
    version: str
    pipeline: object
    metadata: dict


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    from training import gate, train
    from training.settings import TrainingSettings

    root = tmp_path_factory.mktemp("accounts")
    config_path = write_dataset(root / "dataset", model_name=MODEL)
    # MODEL_NAME empty counts as unset: the name comes from the config's model_name
    env = {**embedded_env_vars(root), "DATASET_CONFIG": str(config_path), "MODEL_NAME": ""}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = train.train(TrainingSettings.from_env())
        assert gate.main([]) == 0, "the generated data set's first model must pass its gate"
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(env["MLFLOW_TRACKING_URI"])
        pipeline = mlflow.sklearn.load_model(registry.model_uri(MODEL, result.version))
        metadata = registry.model_metadata(MODEL, result.version)
        yield Trained(root, env, load_config(config_path), result.version, pipeline, metadata)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_missing_categories_are_encoded_as_missing_and_their_signal_is_learned(trained: Trained):
    pre = trained.pipeline.named_steps["preprocess"]
    names = [str(n) for n in pre.get_feature_names_out()]
    region = [n for n in names if original_feature(n, trained.config) == "region"]
    assert "categorical__region___missing__" in region
    assert not any(n.endswith("_nan") for n in names)
    # missingness predicts the label in the generated data: the model must have kept it
    base = pd.DataFrame([{**RECORD_WITH_NULLS, "balance": 2000.0, "region": r} for r in ("north", None)])
    present, missing = trained.pipeline.predict_proba(coerce_features(base, trained.config))[:, 1]
    assert missing > present + 0.1
    assert trained.metadata["test_metrics"]["roc_auc"] > 0.7
    segments = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=registry.get_version(MODEL, trained.version).run_id,
            artifact_path="evaluation/segment_metrics.csv",
        )
    )
    assert set(segments.loc[segments["column"] == "region", "segment"]) == {
        "north",
        "south",
        "east",
        "west",
        "(missing)",
    }


def test_a_record_with_nulls_scores_the_same_through_pipeline_fast_path_and_api(
    trained: Trained, monkeypatch
):
    from model_service.app import create_app
    from model_service.served_model import build_loaded_model
    from model_service.settings import ServiceSettings

    loaded = build_loaded_model(MODEL, trained.version, "champion", trained.pipeline, trained.metadata)
    assert loaded.predictor.kind == "numpy", loaded.note
    batch = loaded.validator.validate([dict(RECORD_WITH_NULLS)])
    fast = float(loaded.predictor.predict(batch)[0])
    frame = coerce_features(pd.DataFrame([RECORD_WITH_NULLS]), trained.config)
    pipeline = float(trained.pipeline.predict_proba(frame)[0, 1])
    assert fast == pytest.approx(pipeline, abs=1e-6)

    for key, value in trained.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("API_KEYS", API_KEY)
    monkeypatch.setenv("SPOOL_DIR", str(trained.root / "spool"))
    monkeypatch.setenv("MODEL_ALIAS", "champion")
    app = create_app(ServiceSettings.from_env(), start_background=False)
    client = app.test_client()
    resp = client.post("/v1/predict", json={"records": [RECORD_WITH_NULLS]}, headers={"X-API-Key": API_KEY})
    assert resp.status_code == 200, resp.get_json()
    prediction = resp.get_json()["predictions"][0]
    assert prediction["probability"] == pytest.approx(pipeline, abs=1e-6)
    assert prediction.get("unknown_categories", []) == []  # a missing category is not an unknown one
    # explanations take the same nulls: same probability, and the missing region has a contribution
    explained = client.post(
        "/v1/explain", json={"records": [RECORD_WITH_NULLS]}, headers={"X-API-Key": API_KEY}
    )
    assert explained.status_code == 200, explained.get_json()
    explanation = explained.get_json()["explanations"][0]
    assert explanation["probability"] == pytest.approx(pipeline, abs=1e-6)
    assert {c["feature"] for c in explanation["contributions"]} == {"age", "balance", "plan", "region"}
    # a null where the config allows no missing value: 422 naming the field
    bad = client.post(
        "/v1/predict",
        json={"records": [{**RECORD_WITH_NULLS, "age": None}]},
        headers={"X-API-Key": API_KEY},
    )
    assert bad.status_code == 422 and "age" in bad.get_data(as_text=True)
    assert np.isfinite(prediction["probability"])

    # Swagger UI: the title names the model and its data set, the example is the config's example_record
    # (with its nulls), and "Try it out" with it answers 200
    spec = client.get("/openapi.json").get_json()
    assert spec["info"]["title"] == f"{MODEL} model service (data set accounts)"
    example = spec["components"]["schemas"]["PredictRequest"]["properties"]["records"]["example"]
    assert example == [{"age": 41.0, "balance": None, "plan": "plus", "region": None}]
    assert trained.metadata["example_record"] == example[0]
    tried = client.post("/v1/predict", json={"records": example}, headers={"X-API-Key": API_KEY})
    assert tried.status_code == 200, tried.get_json()


def test_the_model_card_uses_the_data_sets_words_and_its_own_file(trained: Trained, monkeypatch, tmp_path):
    from operations import model_card
    from training.settings import TrainingSettings

    for key, value in trained.env.items():
        monkeypatch.setenv(key, value)
    settings = TrainingSettings.from_env()
    # never over another data set's card: the built-in card is docs/model_card.md, this one its own
    assert model_card.card_path(settings, "accounts") == REPO_CARDS / "accounts.md"
    assert model_card.card_path(settings, "telco_churn") == model_card.CARD
    monkeypatch.setenv("MODEL_CARD", str(tmp_path / "card.md"))
    settings = TrainingSettings.from_env()
    assert model_card.write_card(settings) == tmp_path / "card.md"
    text = (tmp_path / "card.md").read_text()
    assert text.startswith(f"# Model card: {MODEL}\n")
    assert "| closed rate |" in text and "predicted closed rate" in text and "cost / record" in text
    assert "| region | (missing) |" in text
    assert "churn" not in text.lower() and "offer" not in text.lower() and "| nan |" not in text
    first = text
    assert model_card.write_card(settings) and (tmp_path / "card.md").read_text() == first  # idempotent


def test_the_loop_keeps_missing_values_missing(trained: Trained, monkeypatch, tmp_path):
    """simulate -> service (HTTP) -> prediction log + feedback -> monitor -> retraining data."""
    from model_service.app import create_app
    from model_service.settings import ServiceSettings
    from model_service.state import EXTENSION
    from monitoring.check import run_check
    from monitoring.scenarios import Scenario
    from monitoring.settings import MonitorSettings
    from operations import simulate
    from tests.support.loop_helpers import served_app
    from training import retrain
    from training.settings import TrainingSettings
    from training.validate import validate

    database = f"sqlite:///{tmp_path / 'loop.db'}"
    for key, value in {
        **trained.env,
        "DATABASE_URL": database,
        "DATA_DIR": trained.env["DATA_DIR"],
        "API_KEYS": API_KEY,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "MONITOR_REPORTS_URI": str(tmp_path / "reports"),
        "MONITOR_MIN_WINDOW": "50",
        "MONITOR_WINDOW_MINUTES": "600",
        "RETRAIN_TRIGGER": "log",
    }.items():
        monkeypatch.setenv(key, value)
    config = trained.config
    tsettings = TrainingSettings.from_env()
    records = simulate.held_out_records(tsettings, config)
    assert records["region"].isna().sum() > 5 and records["balance"].isna().sum() > 5

    app = create_app(ServiceSettings.from_env(), start_background=False)
    state = app.extensions[EXTENSION]
    state.plog.start()
    with served_app(app) as url:
        # shifted ages: production rows that are not already in the data, missing values and all
        stats = simulate.simulate(
            url,
            API_KEY,
            records,
            config,
            scenario=Scenario("covariate", ("age",), strength=0.5),
            rate=0,
            batch=20,
            feedback_delay=0.0,
            log=lambda *_: None,
        )
        assert stats.accepted == len(records) and stats.feedback_sent == len(records), stats.line()
        assert state.plog.flush(10)

    outcome = run_check(MonitorSettings.from_env(), config, summary_table=False)
    assert outcome.status in ("ok", "drift") and outcome.result is not None, outcome.reason
    region = next(f for f in outcome.result.features if f.feature == "region")
    assert region.unseen_share == 0.0  # a missing region is missing, not an unseen category
    assert region.missing_share > 0.03 and region.reference_missing_share > 0.03
    assert not {"unseen:region", "missing:region", "missing:balance"} & set(outcome.result.kinds)
    # quality estimated without labels on the real champion's scores, read through its reference's map
    assert (
        outcome.estimate is not None
        and outcome.estimate.extra["calibration"] == "isotonic map on the reference"
    )
    assert all(
        outcome.estimate[m].low <= outcome.estimate[m].value <= outcome.estimate[m].high
        for m in ("roc_auc", "recall")
    )

    data = retrain.build_training_data(tsettings, config, database)
    assert data.labelled == len(records)
    assert data.left_out["outside the declared schema"] == 0
    assert data.left_out[retrain.MISSING_LEFT_OUT] == 0  # within the declared 20 %
    added = data.frame.iloc[data.base.manifest["rows"] :]
    assert added["region"].isna().sum() > 5 and added["balance"].isna().sum() > 5
    assert not added["region"].isin(["nan", "None", "__missing__"]).any()
    assert validate(data.frame, config).ok
