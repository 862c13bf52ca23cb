"""Event time (business time) in the store's readers: a row's `event_at`, or its processing time for a
row logged before event times existed (NULL event_at)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from core import store

T0 = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


def _log(engine: sa.Engine, rid: str, created: datetime, event: datetime | None, model: str = "m") -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(store.predictions),
            {
                "request_id": rid,
                "record_index": 0,
                "created_at": created,
                "event_at": event,
                "model_name": model,
                "model_version": "1",
                "features": {"a": 1},
                "score": 0.5,
                "label": 1,
                "latency_ms": 1.0,
            },
        )


def _engine(tmp_path: Path) -> sa.Engine:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_tables(engine)
    return engine


def test_event_watermark_is_the_newest_event_time_of_the_models_log(tmp_path: Path):
    engine = _engine(tmp_path)
    assert store.event_watermark(engine, "m") is None
    now = T0 + timedelta(days=90)
    _log(engine, "a", now, T0)  # replayed: scored at T0 in business time, logged now
    _log(engine, "b", now, T0 + timedelta(days=30))
    assert store.event_watermark(engine, "m") == T0 + timedelta(days=30)  # not the processing time
    _log(engine, "c", T0 + timedelta(days=31), None)  # logged before event times: its created_at counts
    assert store.event_watermark(engine, "m") == T0 + timedelta(days=31)
    _log(engine, "d", now, now + timedelta(days=5), model="other")  # another model's log
    watermark = store.event_watermark(engine, "m")
    assert watermark == T0 + timedelta(days=31) and watermark.tzinfo is not None


def test_recent_predictions_carry_the_coalesced_event_time(tmp_path: Path):
    engine = _engine(tmp_path)
    _log(engine, "old", T0, None)
    _log(engine, "new", T0 + timedelta(minutes=1), T0 - timedelta(days=60))
    frame = store.recent_predictions(engine, "m", "1", 10, 0)
    by_id = dict(zip(frame["request_id"], frame["event_at"], strict=True))
    assert by_id == {"old": T0, "new": T0 - timedelta(days=60)}
    assert str(frame["event_at"].dt.tz) == "UTC"
    assert "event_at" in store.recent_predictions(engine, "none", "1", 10, 0).columns
