"""The champion timeline: every move of a model's `champion` alias (core.rollout.record_move).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "champion_moves" in sa.inspect(op.get_bind()).get_table_names():
        return  # a store created from the tables before migrations were stamped (it has them all)
    op.create_table(
        "champion_moves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("from_version", sa.String(64)),
        sa.Column("to_version", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.JSON),
    )
    op.create_index("ix_champion_moves_model_at", "champion_moves", ["model_name", "at"])


def downgrade() -> None:
    op.drop_index("ix_champion_moves_model_at", table_name="champion_moves")
    op.drop_table("champion_moves")
