"""The store's migrations on a real PostgreSQL: a new store matches the tables; a store at the
baseline (model versions limited to 50 characters) is widened by migration 0002."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from core import store
from tests.unit.test_store_migrations import differences, head

pytestmark = pytest.mark.integration


def test_postgres_store_is_migrated_and_an_old_one_widened(postgres_server):
    url = postgres_server.create_database("migrations")
    engine = store.make_engine(url)
    store.create_tables(engine)
    assert store.schema_revision(engine) == head()
    assert differences(engine) == []
    # a store at the baseline (model versions limited to 50 characters) is widened by 0002
    old = store.make_engine(postgres_server.create_database("migrations_old"))
    config = store.alembic_config()
    with old.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    store.create_tables(old)
    with old.connect() as conn:
        width = conn.execute(
            sa.text(
                "SELECT character_maximum_length FROM information_schema.columns "
                "WHERE table_name = 'monitoring_runs' AND column_name = 'model_version'"
            )
        ).scalar()
    assert width == 64


def test_postgres_reads_the_coalesced_event_time(postgres_server):
    """event_at NULL (a row logged before migration 0006) reads as created_at; the watermark is the newest."""
    from datetime import UTC, datetime, timedelta

    engine = store.make_engine(postgres_server.create_database("event_time"))
    store.create_tables(engine)
    t0 = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
    row = {"record_index": 0, "model_name": "m", "model_version": "1", "features": {}, "score": 0.5}
    with engine.begin() as conn:
        conn.execute(
            sa.insert(store.predictions),
            [
                {**row, "request_id": "a", "created_at": t0, "event_at": None, "label": 1, "latency_ms": 1.0},
                {
                    **row,
                    "request_id": "b",
                    "created_at": t0 + timedelta(days=60),
                    "event_at": t0 - timedelta(days=1),
                    "label": 0,
                    "latency_ms": 1.0,
                },
            ],
        )
    assert store.event_watermark(engine, "m") == t0
    frame = store.recent_predictions(engine, "m", "1", 10, 0)
    assert dict(zip(frame["request_id"], frame["event_at"], strict=True)) == {
        "a": t0,
        "b": t0 - timedelta(days=1),
    }
