"""Database tables of the loop, in the same store as the service's prediction log.

Read: `predictions` and `feedback` (owned by model_service.prediction_log; imported from there when it
is installed, otherwise declared here with exactly the same schema). Written: `monitoring_runs`
(one row per monitor check), `trigger_events` (every retrain trigger decision, for cooldown and
dedupe) and `rollbacks` (who, when, why, from, to).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

try:  # the service owns the prediction log: use its table objects when they exist
    from model_service import prediction_log as _plog

    predictions: sa.Table = _plog.predictions
    feedback: sa.Table = _plog.feedback
except (ImportError, AttributeError):  # pragma: no cover - only before the service module lands
    predictions = sa.Table(
        "predictions",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("record_index", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200)),
        sa.Column("model_version", sa.String(50)),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("label", sa.Integer),
        sa.Column("latency_ms", sa.Float),
        sa.UniqueConstraint("request_id", "record_index"),
    )
    feedback = sa.Table(
        "feedback",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("record_index", sa.Integer, nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "record_index"),
    )
    _plog = None

monitoring_runs = sa.Table(
    "monitoring_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(20), nullable=False),  # ok | drift | skipped | error
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
    sa.Column("alarm", sa.Boolean, nullable=False, default=False),
    sa.Column("alarm_reasons", sa.JSON),
    sa.Column("details", sa.JSON),  # per-feature score, method, threshold, flag; data-quality checks
    sa.Column("report_uri", sa.Text),
    sa.Column("trigger_event_id", sa.Integer),
)

trigger_events = sa.Table(
    "trigger_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("backend", sa.String(20), nullable=False),
    sa.Column("source", sa.String(40), nullable=False),  # monitor | alertmanager | manual
    sa.Column("dedupe_key", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("monitoring_run_id", sa.Integer),
    sa.Column("status", sa.String(20), nullable=False),  # fired | failed | cooldown | duplicate
    sa.Column("detail", sa.Text),
    sa.Column("parameters", sa.JSON),
)

rollbacks = sa.Table(
    "rollbacks",
    metadata,
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

_engines: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    """One engine per URL; creates the SQLite folder and every table of the loop (idempotent)."""
    if url not in _engines:
        url_ = url
        if url.startswith("postgresql://"):  # SQLAlchemy 2.1 maps this to psycopg 3: we ship psycopg2
            url_ = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        if _plog is not None:  # the service's engine settings (SQLite: WAL, busy timeout)
            engine = _plog.make_engine(url_)
            _plog.create_tables(engine)
        else:
            if url_.startswith("sqlite:///"):
                from pathlib import Path

                Path(url_.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs = (
                {"connect_args": {"timeout": 30}} if url_.startswith("sqlite") else {"pool_pre_ping": True}
            )
            engine = sa.create_engine(url_, **kwargs)
        metadata.create_all(engine)
        _engines[url] = engine
    return _engines[url]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns: they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
