"""The store's migrations build exactly the tables core.store declares, adopt a store made before
migrations without losing its rows, and are safe when several processes start at once."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core import store


def differences(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), store.metadata)
    return [d for d in diffs if not (d[0] == "remove_table" and d[1].name == store.VERSION_TABLE)]


def head() -> str:
    return sorted(p.name.split("_")[0] for p in (store.MIGRATIONS / "versions").glob("0*.py"))[-1]


def test_a_new_store_is_migrated_to_head_and_matches_the_tables(tmp_path: Path):
    engine = store.make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert store.schema_revision(engine) is None
    store.create_tables(engine)
    store.create_tables(engine)  # idempotent
    assert store.schema_revision(engine) == head()
    assert differences(engine) == []


def test_a_store_made_before_migrations_is_stamped_and_keeps_its_rows(tmp_path: Path):
    engine = store.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    store.metadata.create_all(engine)  # how stores were created before migrations existed
    row = {
        "request_id": "r-1",
        "record_index": 0,
        "created_at": datetime.now(UTC),
        "model_name": "m",
        "model_version": "1",
        "features": {"a": 1},
        "score": 0.5,
        "label": 1,
        "latency_ms": 1.0,
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(store.predictions), row)
    store.create_tables(engine)
    assert store.schema_revision(engine) == head()
    with engine.connect() as conn:
        assert conn.execute(sa.select(store.predictions.c.request_id)).scalars().all() == ["r-1"]


def _migrate(url: str) -> None:
    store.create_tables(store.make_engine(url))


def test_processes_starting_together_migrate_once(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_migrate, args=(url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    engine = store.make_engine(url)
    assert store.schema_revision(engine) == head()
    assert differences(engine) == []


def test_0006_adds_the_event_times_to_a_store_at_0005_keeping_its_rows(tmp_path: Path):
    """A store logged before event times: the upgrade adds the nullable columns, its rows keep NULL
    (readers coalesce with created_at / received_at), and the tables then agree with core.store."""
    engine = store.make_engine(f"sqlite:///{tmp_path / 'at5.db'}")
    config = store.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
    at = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        assert "event_at" not in {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
        conn.execute(
            sa.text(
                "INSERT INTO predictions (request_id, record_index, created_at, model_name, model_version, "
                "features, score, label, latency_ms) VALUES ('r-1', 0, :at, 'm', '1', '{}', 0.5, 1, 1.0)"
            ),
            {"at": at.replace(tzinfo=None)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO feedback (request_id, record_index, label, received_at) VALUES ('r-1', 0, 1, :at)"
            ),
            {"at": at.replace(tzinfo=None)},
        )
    store.create_tables(engine)
    assert store.schema_revision(engine) == head() == "0006"
    assert differences(engine) == []
    with engine.connect() as conn:
        assert conn.execute(
            sa.select(store.predictions.c.request_id, store.predictions.c.event_at)
        ).all() == [("r-1", None)]
        assert conn.execute(sa.select(store.feedback.c.event_at)).scalars().all() == [None]
        read = [
            conn.execute(sa.select(store.event_time(t))).scalar_one()
            for t in (store.predictions, store.feedback)
        ]
    assert [store.as_utc(v) for v in read] == [at, at]
