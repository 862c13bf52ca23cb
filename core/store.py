"""The loop's store: the one definition of its tables, engines, and the queries shared by packages.

One database holds the whole loop (SQLite on the embedded default, PostgreSQL on the stack):

- `predictions`: one row per accepted record: request id, record index, time, model name and version,
  the record as validated (JSON), probability, label, the request's latency (the service writes) and
  its event time (`event_at`, business time: when the scored event happened).
- `feedback`: the true label of a record, by request id and record index (one per record), when it
  was received and its event time (`event_at`: when the outcome became known).

Two clocks: `created_at` / `received_at` are processing time (when the service got it); `event_at` is
business time (a replay's simulated clock, a label known 30 days after its score). Rows stored before
migration 0006 have no `event_at`: readers take COALESCE(event_at, created_at / received_at)
(`event_time`).
- `monitoring_runs`: one row per monitor check (drift, live quality, alarm, report).
- `trigger_events`: every retrain trigger decision (for cooldown and dedupe).
- `rollbacks`: who moved the champion back, when, why, from and to (a person or the guard).
- `champion_moves`: the champion timeline: every move of a model's `champion` alias (a promotion, a
  forced one, a person's rollback, the guard's), written by core.rollout under the alias lock.
- `shadow_predictions`: the challenger's score of a live record, scored beside the champion's answer
  (the service's shadow share), for the gate's online check.

The schema is created and upgraded by Alembic migrations (`core/migrations`, version table
`churnops_alembic_version`), run by `create_tables` (`engine_for` does it once per process and URL;
the service's prediction log when it starts). A new column is a new file in core/migrations/versions
beside the change to the table here; tests/unit/test_store_migrations.py checks that they agree.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

metadata = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER primary keys only

predictions = Table(
    "predictions",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    # no separate request_id index: the unique (request_id, record_index) index serves those lookups,
    # and every index costs each logged record a B-tree insert
    Column("request_id", String(36), nullable=False),
    Column("record_index", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("features", JSON, nullable=False),
    Column("score", Float, nullable=False),
    Column("label", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    # business time: when the scored event happened (the request's `event_time`, else created_at, the
    # processing time); NULL on rows logged before migration 0006: read COALESCE(event_at, created_at)
    Column("event_at", DateTime(timezone=True)),
    UniqueConstraint("request_id", "record_index", name="uq_predictions_request_record"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("request_id", String(36), nullable=False, index=True),
    Column("record_index", Integer, nullable=False),
    Column("label", Integer, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # business time: when the outcome became known (the feedback's `event_time`, else received_at); NULL
    # on labels stored before migration 0006: read COALESCE(event_at, received_at)
    Column("event_at", DateTime(timezone=True)),
    UniqueConstraint("request_id", "record_index", name="uq_feedback_request_record"),
)


monitoring_runs = Table(
    "monitoring_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(20), nullable=False),  # ok | drift | skipped | error
    Column("reason", Text),
    Column("model_name", String(200)),
    Column("model_version", String(64)),
    Column("window_size", Integer),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True)),
    Column("reference_size", Integer),
    Column("drift_share", Float),
    Column("drifted_features", Integer),
    Column("n_features", Integer),
    Column("dataset_drift", Boolean),
    Column("prediction_drift_score", Float),
    Column("prediction_drift", Boolean),
    Column("n_labelled", Integer),
    Column("roc_auc", Float),
    Column("precision", Float),
    Column("recall", Float),
    Column("f1", Float),
    Column("alarm", Boolean, nullable=False, default=False),
    Column("alarm_reasons", JSON),
    Column("details", JSON),  # per-feature score, method, threshold, flag; data-quality checks
    Column("report_uri", Text),
    Column("trigger_event_id", Integer),
)

trigger_events = Table(
    "trigger_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("backend", String(20), nullable=False),
    Column("source", String(40), nullable=False),  # monitor | alertmanager | manual
    Column("dedupe_key", String(200), nullable=False),
    Column("reason", Text),
    Column("monitoring_run_id", Integer),
    Column("status", String(20), nullable=False),  # fired | failed | cooldown | duplicate
    Column("detail", Text),
    Column("parameters", JSON),
)

rollbacks = Table(
    "rollbacks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("by", String(200), nullable=False),
    Column("reason", Text),
    Column("model_name", String(200), nullable=False),
    Column("from_version", String(64)),
    Column("to_version", String(64), nullable=False),
    Column("served", Boolean),
    Column("detail", Text),
)

# One move of a model's `champion` alias at a time (core.rollout.alias_lock): a row while a rollback, the
# guard's rollback or a promotion runs; a second mover is refused at once. A holder that dies leaves
# its row until `expires_at`, then the next mover takes it over.
alias_locks = Table(
    "alias_locks",
    metadata,
    Column("model_name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("purpose", Text),
    Column("token", String(32), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# The champion timeline, one row per move of a model's `champion` alias, written by core.rollout.record_move
# (the one writer: rollout.promote for the gate and a retrain's gate, rollout.roll_back for a person and
# the guard) while the alias lock is held, right after the registry moved the alias. `reason` is the
# sentence a person reads (gate verdict and trigger, rollback reason, the guard's figures); `details`
# the same figures as data. `champion_timeline` adds the records each version served between moves.
MOVE_KINDS = ("promotion", "forced_promotion", "rollback", "guard_rollback")
champion_moves = Table(
    "champion_moves",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("from_version", String(64)),
    Column("to_version", String(64), nullable=False),
    Column("kind", String(20), nullable=False),  # MOVE_KINDS
    Column("by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("details", JSON),
    Index("ix_champion_moves_model_at", "model_name", "at"),
)


shadow_predictions = Table(
    "shadow_predictions",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("request_id", String(36), nullable=False),
    Column("record_index", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("champion_version", String(64), nullable=False),
    Column("shadow_version", String(64), nullable=False, index=True),
    Column("score", Float, nullable=False),
    UniqueConstraint("request_id", "record_index", "shadow_version", name="uq_shadow_request_record"),
)


def shadow_pairs(engine: Engine, model_name: str, shadow_version: str) -> pd.DataFrame:
    """Records the challenger `shadow_version` scored in shadow, with the champion's score of the same
    record (the answer it gave), the champion's version and the feedback label (labelled records only)."""
    s, p, f = shadow_predictions, predictions, feedback
    on_p = and_(p.c.request_id == s.c.request_id, p.c.record_index == s.c.record_index)
    on_f = and_(f.c.request_id == s.c.request_id, f.c.record_index == s.c.record_index)
    query = (
        select(
            s.c.score.label("shadow_score"), p.c.score.label("champion_score"), p.c.model_version, f.c.label
        )
        .select_from(s.join(p, on_p).join(f, on_f))
        .where(s.c.model_name == model_name, s.c.shadow_version == str(shadow_version))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.DataFrame(rows, columns=["shadow_score", "champion_score", "champion_version", "label"])


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the log: SQLite gets its folder, WAL and a busy timeout; others pre-ping."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 2)
    kwargs.setdefault("max_overflow", 4)
    if url.startswith("postgresql"):
        kwargs.setdefault("connect_args", {"connect_timeout": 3})
    return create_engine(url, **kwargs)


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "churnops_alembic_version"  # not alembic_version: MLflow's store may share the database
_BASELINE = "0001"
_PG_MIGRATION_LOCK = 7_263_110  # pg_advisory_xact_lock key: one migration at a time per database


@contextlib.contextmanager
def _sqlite_lock(engine: Engine) -> Iterator[None]:
    """Serialize migrations of one SQLite file across processes (the service's workers start together)."""
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    lock = os.open(f"{database}.migrate.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def alembic_config() -> Config:
    """Alembic's configuration for the store's migrations (no alembic.ini: the connection is passed in)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def create_tables(engine: Engine) -> None:
    """Create the tables, or upgrade them, to the newest migration (idempotent, safe when several
    processes start at once). A store made before migrations existed is stamped as the baseline."""
    config = alembic_config()
    lock = _sqlite_lock(engine) if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    with lock, engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
        config.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        if VERSION_TABLE not in tables and "predictions" in tables:
            command.stamp(config, _BASELINE)
        command.upgrade(config, "head")


def schema_revision(engine: Engine) -> str | None:
    """The store's migration revision (None: not created yet)."""
    with engine.connect() as conn:
        if VERSION_TABLE not in inspect(conn).get_table_names():
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def insert_ignoring_duplicates(engine: Engine, table: Table):
    dialect_insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(engine.dialect.name)
    if dialect_insert is None:
        return None
    return dialect_insert(table).on_conflict_do_nothing(index_elements=["request_id", "record_index"])


_engines: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    """One engine per URL in this process, its tables created (idempotent)."""
    if url not in _engines:
        engine = make_engine(url)
        create_tables(engine)
        _engines[url] = engine
    return _engines[url]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns: they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _features(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def event_time(table: Table = predictions):
    """A row's business time: its `event_at`, or its processing time for a row logged before event
    times existed (predictions: created_at; feedback: received_at)."""
    processed = table.c.received_at if table is feedback else table.c.created_at
    return func.coalesce(table.c.event_at, processed)


def event_watermark(engine: Engine, model_name: str) -> datetime | None:
    """The newest event time of the model's logged predictions (any version): the business "now" of
    the log, which a replay's simulated clock moves; None when nothing is logged."""
    p = predictions
    query = select(func.max(event_time(p))).where(p.c.model_name == model_name)
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    if isinstance(value, str):  # SQLite: MAX over COALESCE loses the column type (ISO text)
        value = datetime.fromisoformat(value)
    return as_utc(value)


def labelled_predictions(
    engine: Engine, archive: Any = None, *, model_name: str | None = None, since: datetime | None = None
) -> pd.DataFrame:
    """Logged features + feedback label (`__label__`) of every labelled prediction, oldest first: the
    database's and, with `archive` (a core.objects.ObjectStore, core.retention.archive_of), the archived
    ones, a label stored after its prediction was archived included. `model_name` and `since` (labels
    received at or after; the database's only) keep the records `labelled_since` counts."""
    p, f = predictions, feedback
    query = (
        select(p.c.id, p.c.features, f.c.label, p.c.created_at)
        .select_from(p.join(f, and_(p.c.request_id == f.c.request_id, p.c.record_index == f.c.record_index)))
        .order_by(p.c.created_at, p.c.id)
    )
    if model_name is not None:
        query = query.where(p.c.model_name == model_name)
    if since is not None:
        query = query.where(f.c.received_at >= since)
    with engine.connect() as conn:
        rows = [
            (as_utc(r.created_at), r.id, _features(r.features), int(r.label)) for r in conn.execute(query)
        ]
    if archive is not None:
        from core.retention import archived_with_labels

        old = archived_with_labels(engine, archive, ["features"], labelled_only=True)
        rows += [
            (ts.to_pydatetime(), int(i), _features(feat), int(lab))
            for ts, i, feat, lab in zip(
                old["created_at"], old["id"], old["features"], old["label_fb"], strict=True
            )
        ]
        rows.sort(key=lambda r: (r[0], r[1]))
    frame = pd.DataFrame([r[2] for r in rows])
    frame["__label__"] = [r[3] for r in rows]
    return frame


def labelled_since(engine: Engine, model_name: str, since: datetime) -> int:
    """How many predictions of `model_name` (any version) received a feedback label at or after `since`."""
    p, f = predictions, feedback
    query = (
        select(func.count())
        .select_from(p.join(f, and_(p.c.request_id == f.c.request_id, p.c.record_index == f.c.record_index)))
        .where(p.c.model_name == model_name, f.c.received_at >= since)
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def run_window(engine: Engine, run_id: int, archive: Any = None) -> pd.DataFrame | None:
    """The predictions a monitoring run judged (its model version, between its window's first and last
    record, at most its window size), as `recent_predictions` returns them; None when the run is unknown
    or judged no window. With `archive` (core.retention), a window past the retention window is read
    from the archive (a backfill of an old monitoring window)."""
    r = monitoring_runs
    with engine.connect() as conn:
        run = conn.execute(select(r).where(r.c.id == int(run_id))).mappings().first()
    if run is None or not run["window_start"] or not run["window_end"] or not run["model_version"]:
        return None
    start, end = as_utc(run["window_start"]), as_utc(run["window_end"])
    minutes = (end - start).total_seconds() / 60.0 + 1e-6
    return recent_predictions(
        engine,
        run["model_name"],
        run["model_version"],
        int(run["window_size"] or 0),
        minutes,
        now=end,
        bounded=True,
        archive=archive,
    )


def last_alarm_run(engine: Engine, model_name: str, version: str) -> int | None:
    """The newest monitoring run that alarmed on `version` (its window is what a retrain is for)."""
    r = monitoring_runs
    query = (
        select(r.c.id)
        .where(r.c.model_name == model_name, r.c.model_version == str(version), r.c.alarm.is_(True))
        .order_by(r.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def recent_predictions(
    engine: Engine,
    model_name: str,
    version: str,
    size: int,
    minutes: float,
    now: datetime | None = None,
    bounded: bool = False,
    archive: Any = None,
) -> pd.DataFrame:
    """The most recent predictions of a version (at most `size`, within `minutes`; 0: any age), each with
    its record's features, score, feedback label (NaN where none came) and event time (`event_at`:
    business time, created_at where the row has none). `bounded`: none after `now`.
    With `archive` (core.retention), archived records make up what the database lacks."""
    p, f = predictions, feedback
    upper, now = now, now or utcnow()
    query = (
        select(
            p.c.request_id,
            p.c.record_index,
            p.c.created_at,
            event_time(p).label("event_at"),
            p.c.features,
            p.c.score,
            f.c.label.label("feedback_label"),
        )
        .select_from(
            p.outerjoin(f, and_(p.c.request_id == f.c.request_id, p.c.record_index == f.c.record_index))
        )
        .where(p.c.model_name == model_name, p.c.model_version == str(version))
        .order_by(p.c.created_at.desc(), p.c.id.desc())
        .limit(size)
    )
    if minutes and minutes > 0:
        query = query.where(p.c.created_at >= now - timedelta(minutes=minutes))
    if upper is not None and bounded:
        query = query.where(p.c.created_at <= upper)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings().all()]
    if archive is not None and len(rows) < size:
        from core.retention import archived_with_labels

        filters = [("model_name", "=", model_name), ("model_version", "=", str(version))]
        if minutes and minutes > 0:
            filters.append(("created_at", ">=", pd.Timestamp(now - timedelta(minutes=minutes))))
        if upper is not None and bounded:
            filters.append(("created_at", "<=", pd.Timestamp(upper)))
        old = archived_with_labels(engine, archive, ["features", "score", "event_at"], filters)
        old = old.sort_values(["created_at", "id"], ascending=False).head(size - len(rows))
        rows += [
            {
                "request_id": r.request_id,
                "record_index": int(r.record_index),
                "created_at": r.created_at.to_pydatetime(),
                "event_at": r.event_at.to_pydatetime(),
                "features": r.features,
                "score": r.score,
                "feedback_label": None if pd.isna(r.label_fb) else r.label_fb,
            }
            for r in old.itertuples()
        ]
    if not rows:
        return pd.DataFrame(
            columns=["request_id", "record_index", "created_at", "event_at", "score", "label"]
        )
    features = pd.DataFrame([_features(r["features"]) for r in rows])
    meta = pd.DataFrame(
        {
            "request_id": [r["request_id"] for r in rows],
            "record_index": [r["record_index"] for r in rows],
            "created_at": [as_utc(r["created_at"]) for r in rows],
            "event_at": [as_utc(r["event_at"]) for r in rows],
            "score": [float(r["score"]) for r in rows],
            "label": [
                float("nan") if r["feedback_label"] is None else float(r["feedback_label"]) for r in rows
            ],
        }
    )
    return pd.concat([features, meta], axis=1)


def last_champion_move(engine: Engine, model_name: str) -> dict[str, Any] | None:
    """The newest row of `champion_moves` for the model (None: the timeline has no move yet)."""
    m = champion_moves
    query = select(m).where(m.c.model_name == model_name).order_by(m.c.at.desc(), m.c.id.desc()).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return _move(row) if row is not None else None


def _move(row) -> dict[str, Any]:
    move = dict(row)
    move["at"] = as_utc(move["at"])
    return move


def champion_timeline(
    engine: Engine, model_name: str, limit: int = 100, archive: Any = None
) -> list[dict[str, Any]]:
    """The newest `limit` moves of the model's champion, oldest first, each with `until` (the next move's
    time; None for the current champion) and the prediction log's records in that interval:
    `records_served` (logged with the moved-to version) and `records_by_version` (every version logged
    then: a version other than the moved-to one is a replica still following the move). With `archive`
    (core.retention), archived records count too (three columns of every archived part are read)."""
    m, p = champion_moves, predictions
    newest = select(m).where(m.c.model_name == model_name).order_by(m.c.at.desc(), m.c.id.desc()).limit(limit)
    old = None
    if archive is not None:
        from core.retention import read_archive

        columns = ["model_version", "created_at"]
        old = read_archive(archive, "predictions", columns, filters=[("model_name", "=", model_name)])
    with engine.connect() as conn:
        moves = [_move(row) for row in conn.execute(newest).mappings().all()][::-1]
        # `limit` keeps the newest moves, so the last one shown is the current champion's
        for i, move in enumerate(moves):
            move["until"] = moves[i + 1]["at"] if i + 1 < len(moves) else None
            counted = select(p.c.model_version, func.count()).where(
                p.c.model_name == model_name, p.c.created_at >= move["at"]
            )
            if move["until"] is not None:
                counted = counted.where(p.c.created_at < move["until"])
            by_version = {str(v): int(n) for v, n in conn.execute(counted.group_by(p.c.model_version)).all()}
            if old is not None and not old.empty:
                inside = old["created_at"] >= pd.Timestamp(move["at"])
                if move["until"] is not None:
                    inside &= old["created_at"] < pd.Timestamp(move["until"])
                for v, n in old.loc[inside, "model_version"].astype(str).value_counts().items():
                    by_version[v] = by_version.get(v, 0) + int(n)
            move["records_by_version"] = by_version
            move["records_served"] = by_version.get(str(move["to_version"]), 0)
    return moves
