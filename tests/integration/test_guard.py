"""The post-promotion guard against a real registry (two tiny versions, v2 promoted over v1), a prediction
log with feedback, and a stand-in service that follows the alias on reload: a v2 whose live quality
collapses is rolled back through the rollback path (audit row by `guard` with the figures), blocked from
promotion until a person lifts the block; a v2 as good as v1 is only watched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from core import registry, store
from core.dataset import load_config
from monitoring import guard
from monitoring.settings import MonitorSettings
from tests.integration.test_loop_rollback import NAME, StandInService, two_versions  # noqa: F401


def log_scored(engine, version: str, labels: np.ndarray, scores: np.ndarray, end: datetime) -> None:
    """One record per request, one second apart, ending at `end`, each with its label as feedback."""
    preds, fbs = [], []
    for i, (label, score) in enumerate(zip(labels, scores, strict=True)):
        rid, at = str(uuid.uuid4()), end - timedelta(seconds=len(labels) - i)
        preds.append(
            dict(
                request_id=rid,
                record_index=0,
                created_at=at,
                model_name=NAME,
                model_version=version,
                features={},
                score=float(score),
                label=int(score >= 0.5),
                latency_ms=2.0 + (i % 7) * 0.1,
            )
        )
        fbs.append(dict(request_id=rid, record_index=0, label=int(label), received_at=at))
    with engine.begin() as conn:
        conn.execute(store.predictions.insert(), preds)
        conn.execute(store.feedback.insert(), fbs)


@pytest.fixture
def watched(two_versions):  # noqa: F811 - the fixture imported above
    for version in ("1", "2"):
        registry.MlflowClient().set_model_version_tag(NAME, version, "threshold", "0.5")
    promoted_at = datetime.fromisoformat(registry.champion_history(NAME)[-1]["at"])
    engine = store.engine_for(two_versions["DATABASE_URL"])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    good = np.clip(labels * 0.6 + rng.random(600) * 0.4, 0, 1)  # ROC AUC near 1 at threshold 0.5
    log_scored(engine, "1", labels[:300], good[:300], promoted_at - timedelta(seconds=2))
    service = StandInService(two_versions["MLFLOW_TRACKING_URI"])
    yield two_versions, engine, labels[300:], good[300:], service
    service.close()


def test_a_champion_worse_than_the_one_it_replaced_is_rolled_back_and_blocked(watched, monkeypatch):
    env, engine, labels, good, service = watched
    monkeypatch.setenv("SERVICE_URL", service.url)
    assert service.version == "2"
    log_scored(engine, "2", labels, 1.0 - good, datetime.now(UTC) + timedelta(seconds=len(labels)))
    settings = MonitorSettings.from_env()
    config = load_config(settings.dataset_config)

    outcome = guard.check(settings, config)

    assert outcome.status == "breach", outcome.line()
    assert {b.figure for b in outcome.breaches} >= {"roc_auc", "recall"}
    assert outcome.new.labelled == 300 and outcome.old.labelled == 300
    assert str(registry.version_by_alias(NAME, registry.CHAMPION).version) == "1"
    assert service.version == "1" and outcome.served.startswith("served v1")
    with engine.connect() as conn:
        row = conn.execute(sa.select(store.rollbacks)).mappings().one()
    assert (row["by"], row["from_version"], row["to_version"], row["served"]) == ("guard", "2", "1", True)
    assert "live roc_auc" in row["reason"] and "v2 vs v1" in row["reason"]
    mv2 = registry.get_version(NAME, "2")
    assert registry.blocked(mv2) and mv2.tags["blocked_by"] == "guard"
    assert guard.blocked_versions(NAME) == ["2"]

    # blocked: no promotion, no rollback to it, until a person lifts the block
    with pytest.raises(registry.RegistryError, match="blocked by guard"):
        registry.promote(NAME, "2", "try again")
    with pytest.raises(registry.RegistryError, match="blocked by guard"):
        registry.rollback(NAME, "2")
    registry.unblock(NAME, "2", reason="fixed upstream data; reviewed the figures", by="alice")
    assert registry.blocked(registry.get_version(NAME, "2")) is None
    assert registry.get_version(NAME, "2").tags["unblocked_by"] == "alice"
    registry.promote(NAME, "2", "after review", by="alice")


def test_a_champion_as_good_as_the_one_it_replaced_is_only_watched(watched, monkeypatch):
    env, engine, labels, good, service = watched
    monkeypatch.setenv("SERVICE_URL", service.url)
    log_scored(engine, "2", labels, good, datetime.now(UTC) + timedelta(seconds=len(labels)))
    settings = MonitorSettings.from_env()
    outcome = guard.check(settings, load_config(settings.dataset_config))
    assert outcome.status == "watching", outcome.line()
    assert not outcome.breaches and "within bounds" in outcome.reason
    assert str(registry.version_by_alias(NAME, registry.CHAMPION).version) == "2"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.rollbacks)).scalar() == 0
