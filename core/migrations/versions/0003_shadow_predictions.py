"""Shadow scores: the challenger's score of a live record, beside the champion's answer (model_service.shadow).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    if "shadow_predictions" in sa.inspect(op.get_bind()).get_table_names():
        return  # a store created from the tables before migrations were stamped (it has them all)
    op.create_table(
        "shadow_predictions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("record_index", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("champion_version", sa.String(64), nullable=False),
        sa.Column("shadow_version", sa.String(64), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.UniqueConstraint("request_id", "record_index", "shadow_version", name="uq_shadow_request_record"),
    )
    op.create_index("ix_shadow_predictions_shadow_version", "shadow_predictions", ["shadow_version"])


def downgrade() -> None:
    op.drop_index("ix_shadow_predictions_shadow_version", table_name="shadow_predictions")
    op.drop_table("shadow_predictions")
