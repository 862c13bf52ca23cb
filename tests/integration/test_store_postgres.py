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
