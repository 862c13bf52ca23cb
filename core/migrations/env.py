"""Alembic environment of the loop's store: always run through `core.store.create_tables(engine)`,
which passes its connection in (`config.attributes["connection"]`); there is no alembic.ini."""

from alembic import context

from core.store import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
