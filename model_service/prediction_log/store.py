"""Table access of the prediction log: the rows the service writes and the lookups it makes.

The tables themselves are defined once in `core.store` (`predictions`, `feedback`); this module holds
the service's engine on them (JSON serialized with `jsonfast.dumps`, orjson, ~8x json.dumps on a record:
Core inserts and the SQLite fast path both go through it, so they store the same text) and every query
the service runs: bulk prediction inserts that skip duplicates (a record moved twice, by a writer killed
between its commit and the spool file's deletion, is stored once), whether a prediction exists, and the
feedback insert.

The bulk path of each backend was chosen by measurement (tools/bench_log_insert.py, docs/scaling.md):
PostgreSQL `COPY` (psycopg2 `copy_expert`, CSV) into a temporary table, then one `INSERT ... SELECT ...
ON CONFLICT DO NOTHING`, in one transaction; SQLite one `executemany` of `INSERT OR IGNORE` in one
transaction; other dialects Core's insert-many. Database errors are raised as they come
(`SQLAlchemyError`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert, make_url, select
from sqlalchemy.exc import IntegrityError

from core.store import (
    as_utc,
    create_tables,
    event_time,
    feedback,
    insert_ignoring_duplicates,
    make_engine,
    predictions,
)
from model_service import jsonfast

COLUMNS = (
    "request_id",
    "record_index",
    "created_at",
    "model_name",
    "model_version",
    "features",
    "score",
    "label",
    "latency_ms",
    "event_at",
)
Row = tuple  # one record's values in COLUMNS order (features a dict, created_at and event_at datetimes)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Item:
    """One request's records as submitted to the log (turned into rows by the writer, not the request)."""

    request_id: str
    created_at: datetime
    model_name: str
    model_version: str
    records: list[dict[str, Any]]
    scores: np.ndarray
    labels: np.ndarray
    latency_ms: float
    event_at: datetime | None = None  # business time of the records (UTC); None: created_at

    def rows(self) -> list[Row]:
        n = len(self.records)
        scores, labels = self.scores.tolist(), self.labels.tolist()
        if len(scores) != n or len(labels) != n:
            raise ValueError(f"{n} records but {len(scores)} scores and {len(labels)} labels")
        return list(
            zip(
                repeat(self.request_id, n),
                range(n),
                repeat(self.created_at, n),
                repeat(self.model_name, n),
                repeat(self.model_version, n),
                self.records,
                scores,
                labels,
                repeat(self.latency_ms, n),
                repeat(self.event_at or self.created_at, n),
                strict=True,
            )
        )


def private_sqlite_file(url: str) -> None:
    """Create a SQLite database file 0600 (owner only, as the spool) before SQLite would create it 0644;
    SQLite gives its -wal and -shm files the database file's mode. An existing file is left as it is."""
    parsed = make_url(url)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another worker made it first, or it was there
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


class LogStore:
    """The prediction log's tables through one engine."""

    def __init__(self, url: str, engine: Engine | None = None):
        self.url = url
        private_sqlite_file(url)
        self.engine = engine or make_engine(url, json_serializer=jsonfast.dumps)
        self.tables_ready = False

    def ensure_tables(self) -> None:
        """Create the tables once (raises SQLAlchemyError while the database is unreachable)."""
        if not self.tables_ready:
            create_tables(self.engine)
            self.tables_ready = True

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # ---- predictions
    def insert(self, rows: list[Row]) -> None:
        """Insert prediction rows in one transaction; rows already there (same request id and record
        index) are skipped."""
        if not rows:
            return
        if self.engine.dialect.name == "sqlite":
            self._insert_sqlite(rows)
            return
        if self.engine.dialect.driver == "psycopg2":
            self._insert_copy(rows)
            return
        self.insert_many(rows)

    def insert_many(self, rows: list[Row]) -> None:
        """Core's insert-many that skips duplicates (PostgreSQL: psycopg2's batched VALUES; what `insert`
        used before COPY, kept for dialects without COPY and for the measurement)."""
        stmt = insert_ignoring_duplicates(self.engine, predictions)
        dicts = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        with self.engine.begin() as conn:
            if stmt is not None:
                conn.execute(stmt, dicts)
                return
            for row in dicts:  # other dialects: one savepoint per row, duplicates skipped
                try:
                    with conn.begin_nested():
                        conn.execute(insert(predictions), row)
                except IntegrityError:
                    pass

    _COPY_COLUMNS = ", ".join(COLUMNS)
    _COPY_TABLE = "prediction_log_in"  # per connection (TEMP), emptied at each commit

    def _insert_copy(self, rows: list[Row]) -> None:
        """PostgreSQL: COPY the rows (CSV) into a temporary table, then move them with one INSERT ... SELECT
        ... ON CONFLICT DO NOTHING, in one transaction. The values are the text Core would bind (features
        through `jsonfast.dumps`, times in ISO 8601 with their offset)."""
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        dumps = jsonfast.dumps
        out.writerows(
            (
                rid,
                idx,
                created.isoformat(),
                name,
                version,
                dumps(features),
                repr(float(score)),
                int(label),
                repr(float(latency)),
                event.isoformat(),
            )
            for rid, idx, created, name, version, features, score, label, latency, event in rows
        )
        buf.seek(0)
        with self.engine.begin() as conn:
            cur = conn.connection.dbapi_connection.cursor()
            try:
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {self._COPY_TABLE} ON COMMIT DELETE ROWS AS "
                    f"SELECT {self._COPY_COLUMNS} FROM predictions WITH NO DATA"
                )
                cur.copy_expert(
                    f"COPY {self._COPY_TABLE} ({self._COPY_COLUMNS}) FROM STDIN WITH (FORMAT csv)", buf
                )
                cur.execute(
                    f"INSERT INTO predictions ({self._COPY_COLUMNS}) SELECT {self._COPY_COLUMNS} "
                    f"FROM {self._COPY_TABLE} ON CONFLICT (request_id, record_index) DO NOTHING"
                )
            finally:
                cur.close()

    _SQLITE_INSERT = (
        f"INSERT OR IGNORE INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    )

    def _insert_sqlite(self, rows: list[Row]) -> None:
        """SQLite: one DBAPI executemany of tuples, each value bound by its column's own SQLAlchemy type
        processor (so rows read back exactly as Core would have written them; unit-tested), applied column
        by column: a column of repeated values (created_at, event_at, names) is processed once per
        distinct value."""
        if not rows:
            return
        dialect = self.engine.dialect
        columns = list(zip(*rows, strict=True))
        for j, name in enumerate(COLUMNS):
            proc = predictions.c[name].type._cached_bind_processor(dialect)
            if proc is None:
                continue
            if name == "features":
                columns[j] = list(map(proc, columns[j]))
            else:
                memo = {v: proc(v) for v in set(columns[j])}
                columns[j] = [memo[v] for v in columns[j]]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._SQLITE_INSERT, list(zip(*columns, strict=True)))

    def prediction_exists(self, request_id: str, record_index: int) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(predictions.c.id).where(
                    predictions.c.request_id == request_id, predictions.c.record_index == record_index
                )
            ).first()
        return row is not None

    def prediction_event_time(self, request_id: str, record_index: int) -> datetime | None:
        """The record's event time (business time: COALESCE(event_at, created_at), UTC); None when the
        database has no such prediction."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(event_time(predictions)).where(
                    predictions.c.request_id == request_id, predictions.c.record_index == record_index
                )
            ).scalar()
        return as_utc(value)

    # ---- feedback
    def insert_feedback(
        self,
        request_id: str,
        record_index: int,
        label: int,
        received_at: datetime,
        event_at: datetime | None = None,
    ) -> bool:
        """Store a record's true label (`event_at`: when the outcome became known in business time;
        None: received_at); False when the record already has one (nothing written)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(feedback).values(
                        request_id=request_id,
                        record_index=record_index,
                        label=label,
                        received_at=received_at,
                        event_at=event_at or received_at,
                    )
                )
        except IntegrityError:
            return False
        return True
