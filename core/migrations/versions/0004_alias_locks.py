"""Alias locks: one move of a model's `champion` alias at a time (core.rollout.alias_lock).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "alias_locks" in sa.inspect(op.get_bind()).get_table_names():
        return  # a store created from the tables before migrations were stamped (it has them all)
    op.create_table(
        "alias_locks",
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("purpose", sa.Text),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alias_locks")
