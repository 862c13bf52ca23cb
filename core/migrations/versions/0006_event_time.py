"""Event time: a business time on every logged record and label, beside the processing time.

`predictions.event_at` (when the scored event happened: the request's `event_time`, else created_at)
and `feedback.event_at` (when the outcome became known: the feedback's `event_time`, else received_at).
Nullable: rows stored before this revision keep NULL and are read as COALESCE(event_at, created_at) /
COALESCE(event_at, received_at); nothing is rewritten (a large log is not locked for a backfill).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("predictions", "feedback")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table in TABLES:
        if "event_at" in {c["name"] for c in inspector.get_columns(table)}:
            continue  # a store created from the tables before migrations were stamped (it has them all)
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("event_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("event_at")
