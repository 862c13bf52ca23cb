"""Baseline: the loop's tables as they were before migrations (created by `metadata.create_all`).

A store created before migrations existed is stamped with this revision (`create_tables`), not rebuilt.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("record_index", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.UniqueConstraint("request_id", "record_index", name="uq_predictions_request_record"),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_table(
        "feedback",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("record_index", sa.Integer, nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "record_index", name="uq_feedback_request_record"),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    op.create_table(
        "monitoring_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("model_name", sa.String(200)),
        sa.Column("model_version", sa.String(50)),
        sa.Column("window_size", sa.Integer),
        sa.Column("window_start", sa.DateTime(timezone=True)),
        sa.Column("window_end", sa.DateTime(timezone=True)),
        sa.Column("reference_size", sa.Integer),
        sa.Column("drift_share", sa.Float),
        sa.Column("drifted_features", sa.Integer),
        sa.Column("n_features", sa.Integer),
        sa.Column("dataset_drift", sa.Boolean),
        sa.Column("prediction_drift_score", sa.Float),
        sa.Column("prediction_drift", sa.Boolean),
        sa.Column("n_labelled", sa.Integer),
        sa.Column("roc_auc", sa.Float),
        sa.Column("precision", sa.Float),
        sa.Column("recall", sa.Float),
        sa.Column("f1", sa.Float),
        sa.Column("alarm", sa.Boolean, nullable=False),
        sa.Column("alarm_reasons", sa.JSON),
        sa.Column("details", sa.JSON),
        sa.Column("report_uri", sa.Text),
        sa.Column("trigger_event_id", sa.Integer),
    )
    op.create_table(
        "trigger_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("backend", sa.String(20), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("monitoring_run_id", sa.Integer),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("parameters", sa.JSON),
    )
    op.create_table(
        "rollbacks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("from_version", sa.String(50)),
        sa.Column("to_version", sa.String(50), nullable=False),
        sa.Column("served", sa.Boolean),
        sa.Column("detail", sa.Text),
    )


def downgrade() -> None:
    for table in ("rollbacks", "trigger_events", "monitoring_runs", "feedback", "predictions"):
        op.drop_table(table)
