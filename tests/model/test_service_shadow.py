"""Shadow scoring: with SHADOW_SHARE=1 the challenger (here a deliberately bad version) scores every
live request beside the champion, off the request path; the answers are the champion's, unchanged; the
shadow scores are stored with both versions; the gate's online check then compares the two on the same
labelled live records and fails the bad challenger (and does not judge before enough records)."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from core import registry, store
from core.dataset import load_config
from model_service.app import create_app
from model_service.settings import ServiceSettings
from model_service.state import EXTENSION
from operations import simulate
from operations.bad_model import register_bad_model
from tests.support.loop_helpers import served_app
from training import gate, train
from training.settings import TrainingSettings

API_KEY = "shadow-test-key-0123456"


@pytest.fixture
def champion_and_bad_challenger(embedded_env, monkeypatch: pytest.MonkeyPatch):
    for key, value in {
        "API_KEYS": API_KEY,
        "SHADOW_SHARE": "1",
        "SPOOL_DIR": str(embedded_env / "spool"),
        "PROMETHEUS_MULTIPROC_DIR": "",
    }.items():
        monkeypatch.setenv(key, value)
    settings = TrainingSettings.from_env()
    train.train(settings)
    assert gate.main([]) == 0
    assert register_bad_model(settings) == "2"
    return settings


def test_the_challenger_scores_in_shadow_without_changing_answers(champion_and_bad_challenger):
    tsettings = champion_and_bad_challenger
    config = load_config(tsettings.dataset_config)
    records = simulate.held_out_records(tsettings, config).head(300)
    app = create_app(ServiceSettings.from_env(), start_background=False)
    state = app.extensions[EXTENSION]
    state.plog.start()
    state.shadow.start(state.manager)
    try:
        assert state.shadow.model is not None and state.shadow.model.version == "2"
        with served_app(app) as url:
            stats = simulate.simulate(
                url, API_KEY, records, config, rate=0, batch=20, feedback_delay=0.0, log=lambda *_: None
            )
            assert stats.accepted == len(records) and stats.feedback_sent == len(records), stats.line()
            assert state.plog.flush(10)
    finally:
        # the shadow-follow thread polls the registry through MLflow's global URI: left running, it
        # would poll MLflow's default store (./mlflow.db) once the test's URI is reset
        state.shutdown()

    engine = store.engine_for(tsettings.database_url)
    with engine.connect() as conn:
        served = dict(
            conn.execute(
                sa.select(store.predictions.c.model_version, sa.func.count()).group_by(
                    store.predictions.c.model_version
                )
            ).all()
        )
        shadow = conn.execute(sa.select(store.shadow_predictions)).mappings().all()
    assert served == {"1": len(records)}  # every answer is the champion's
    assert len(shadow) == len(records)
    assert {(r["champion_version"], r["shadow_version"]) for r in shadow} == {("1", "2")}

    pairs = store.shadow_pairs(engine, tsettings.model_name, "2")
    assert len(pairs) == len(records)
    champion = gate.load_version(tsettings.model_name, "1")
    challenger = gate.load_version(tsettings.model_name, "2")
    from core.features import coerce_features

    # the logged answer is the champion's own score; the shadow score is the challenger's
    direct = challenger.score(coerce_features(records, config))
    assert np.allclose(np.sort(pairs["shadow_score"]), np.sort(direct), atol=1e-6)
    assert not np.allclose(np.sort(pairs["champion_score"]), np.sort(direct), atol=1e-3)

    champion_mv = registry.get_version(tsettings.model_name, "1")
    checks = gate.online_checks(
        tsettings.database_url,
        tsettings.model_name,
        challenger,
        champion_mv,
        {"min_records": 200, "max_regression": {"roc_auc": 0.02}},
    )
    assert [c.passed for c in checks] == [False], checks
    assert checks[0].name == "online: live roc_auc vs champion" and "300 live records" in checks[0].detail
    early = gate.online_checks(
        tsettings.database_url, tsettings.model_name, challenger, champion_mv, {"min_records": 1000}
    )
    assert early[0].passed and early[0].detail.startswith("not judged: 300")
    assert champion.version == "1"
