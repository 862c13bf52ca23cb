"""core.rollout.alias_lock: one move of a model's champion alias at a time, across processes sharing
the store; a holder that died is taken over once its hold has expired."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from core import rollout, store


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
    store.create_tables(engine)
    return engine


def test_a_second_holder_is_refused_with_who_and_what(engine):
    with rollout.alias_lock(engine, "m", "alice", "rollback", 60):
        busy = pytest.raises(rollout.AliasBusy, match=r"in progress: rollback by alice since \d{4}-")
        with busy, rollout.alias_lock(engine, "m", "guard", "guard rollback", 60):
            pass
        with rollout.alias_lock(engine, "other-model", "bob", "promotion", 60):
            pass  # the lock is per model
    with rollout.alias_lock(engine, "m", "guard", "guard rollback", 60):
        pass  # released when the first block ended


def test_released_when_the_block_raises(engine):
    with pytest.raises(ValueError), rollout.alias_lock(engine, "m", "alice", "rollback", 60):
        raise ValueError("the move failed")
    with engine.connect() as conn:
        assert conn.execute(sa.select(store.alias_locks)).all() == []


def test_a_dead_holders_lock_is_taken_over_after_it_expires(engine):
    past = store.utcnow() - timedelta(seconds=5)
    with engine.begin() as conn:  # what a rollback killed mid-way leaves behind
        conn.execute(
            store.alias_locks.insert().values(
                model_name="m",
                holder="dead",
                purpose="rollback",
                token="x",
                acquired_at=past,
                expires_at=past,
            )
        )
    with rollout.alias_lock(engine, "m", "alice", "rollback", 60), engine.connect() as conn:
        assert conn.execute(sa.select(store.alias_locks.c.holder)).scalars().all() == ["alice"]
