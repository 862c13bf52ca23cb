"""The prediction log: tables, engine, and the writer that keeps the database off the request path.

Tables (SQLAlchemy 2 Core; the monitoring component reads them):

- `predictions`: one row per accepted record: request id, record index, time, model name and version,
  the record as validated (JSON), probability, label and the request's latency.
- `feedback`: the true label of a record, by request id and record index (one per record).

`PredictionLog` takes a request's records with `submit` (a deque append, plus an append to the process's
write-ahead segment so that a killed worker loses nothing), and a background
thread writes them in batches (`LOG_BATCH_SIZE`, at least every `LOG_FLUSH_SECONDS`) with
"insert ... on conflict do nothing", so a replayed record is never written twice. The in-memory queue
is bounded (`LOG_QUEUE_SIZE` records); past it records go straight to the spool.

The spool: when the database is unreachable, batches are appended (and fsynced) as JSON lines to a
segment file under `SPOOL_DIR/<hash of DATABASE_URL>/`; the writer retries the database every couple of
seconds and, once it answers, replays every closed segment (its own and those left by earlier
processes), deleting a segment only after all of it is committed. A segment being written is held with
an exclusive `flock`, so two workers never replay the same file and none replays a file still in use.
`close()` (gunicorn's worker_exit hook on SIGTERM, and atexit) drains the queue to the database, or to
the spool if the database is down. A record is only reported dropped when it can be written neither to
the database nor to the spool file (the `dropped` counter, and an error in the log).
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import logging
import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from model_service import jsonfast

log = logging.getLogger("model_service.prediction_log")

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
    UniqueConstraint("request_id", "record_index", name="uq_feedback_request_record"),
)


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


def create_tables(engine: Engine) -> None:
    """Create the tables if missing (safe when several workers start at once)."""
    for attempt in range(3):
        try:
            metadata.create_all(engine)
            return
        except IntegrityError:  # another worker created them between check and create
            if attempt == 2:
                raise
        except SQLAlchemyError as exc:
            if "already exists" not in str(exc) or attempt == 2:
                raise


def _insert_ignoring_duplicates(engine: Engine, table: Table):
    name = engine.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        return None
    return dialect_insert(table).on_conflict_do_nothing(index_elements=["request_id", "record_index"])


# --------------------------------------------------------------------------- request ids
_RNG: tuple[int, random.Random] | None = None


def _rng() -> random.Random:
    """A per-process generator seeded from os.urandom (reseeded after a fork): ids must be unique, not secret."""
    global _RNG
    if _RNG is None or _RNG[0] != os.getpid():
        _RNG = (os.getpid(), random.Random(secrets.token_bytes(32)))
    return _RNG[1]


def new_request_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; sortable by time."""
    ms = time.time_ns() // 1_000_000
    rand = _rng().getrandbits(80)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64  # version 7, rand_a
    value |= 0b10 << 62 | (rand & ((1 << 62) - 1))  # variant, rand_b
    return str(uuid.UUID(int=value))


def request_id_age(request_id: str) -> float | None:
    """Seconds since a UUIDv7 request id was issued (None when it is not one)."""
    try:
        u = uuid.UUID(request_id)
    except ValueError:
        return None
    if u.version != 7:
        return None
    return time.time() - (u.int >> 80) / 1000.0


# --------------------------------------------------------------------------- the writer
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
)
Row = tuple  # one record's values in COLUMNS order (features a dict, created_at a datetime)
# The log's engine serializes JSON with jsonfast.dumps (orjson, ~8x json.dumps on a record): Core inserts
# and the SQLite fast path both go through it, so they store the same text.


@dataclass
class _Item:
    request_id: str
    created_at: datetime
    model_name: str
    model_version: str
    records: list[dict[str, Any]]
    scores: np.ndarray
    labels: np.ndarray
    latency_ms: float

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
                strict=True,
            )
        )


def _row_to_json(row: Row) -> str:
    """A spool line: the row as a JSON object keyed by column (the format older spool files have too)."""
    data = dict(zip(COLUMNS, row, strict=True))
    data["created_at"] = data["created_at"].isoformat()
    return jsonfast.dumps(data)


def _row_from_json(line: str) -> Row:
    data = jsonfast.loads(line)
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    return tuple(data[c] for c in COLUMNS)


class _NoMetrics:
    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *a, **k: None


class PredictionLog:
    RETRY_SECONDS = 2.0

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        *,
        queue_size: int = 100_000,
        batch_size: int = 500,
        flush_seconds: float = 0.25,
        metrics: Any = None,
        engine: Engine | None = None,
    ):
        self.url = url
        self.engine = engine or make_engine(url, json_serializer=jsonfast.dumps)
        self.spool_dir = Path(spool_dir) / hashlib.sha256(url.encode()).hexdigest()[:12]
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.metrics = metrics or _NoMetrics()
        self._items: collections.deque[_Item] = collections.deque()
        self._queued = 0  # records in _items
        self._pending: collections.Counter[str] = (
            collections.Counter()
        )  # request id -> records not yet written
        self._cond = threading.Condition()
        self._spool_lock = threading.Lock()
        self._segment = None  # open spool segment (file object holding an flock)
        self._wal = None  # this process's write-ahead segment (flock-held; see _write_ahead)
        self._wal_path: Path | None = None
        self._wal_dirty = False
        self._stop = False
        self._flush_requested = 0
        self._flushed = 0
        self.db_ok = True
        self.last_db_error: str | None = None
        self._next_retry = 0.0
        self._tables_ready = False
        self._thread: threading.Thread | None = None

    # ---- public API
    def start(self) -> PredictionLog:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_tables()
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()
        return self

    def submit(
        self,
        request_id: str,
        created_at: datetime,
        model_name: str,
        model_version: str,
        records: list[dict[str, Any]],
        scores: np.ndarray,
        labels: np.ndarray,
        latency_ms: float,
    ) -> None:
        item = _Item(request_id, created_at, model_name, model_version, records, scores, labels, latency_ms)
        n = len(records)
        with self._cond:
            if self._queued + n <= self.queue_size and not self._stop:
                self._write_ahead(item)
                self._items.append(item)
                self._queued += n
                self._pending[request_id] += n
                self.metrics.queue_depth(self._queued)
                if self._queued >= self.batch_size:
                    self._cond.notify()
                return
        # queue full (or shutting down): straight to the spool, still nothing lost
        self._spool(item.rows(), reason="queue full")

    def is_pending(self, request_id: str) -> bool:
        with self._cond:
            return self._pending.get(request_id, 0) > 0

    def flush(self, timeout: float = 10.0) -> bool:
        """Ask the writer to write everything queued now; True when done within `timeout`."""
        with self._cond:
            self._flush_requested += 1
            target = self._flush_requested
            self._cond.notify_all()
            end = time.monotonic() + timeout
            while self._flushed < target:
                left = end - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 20.0) -> None:
        """Drain the queue to the database (or the spool) and stop the writer."""
        with self._cond:
            if self._stop:
                return
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:  # anything the writer did not get to
            leftover = list(self._items)
            self._items.clear()
            self._queued = 0
        rows = [r for item in leftover for r in item.rows()]
        if rows:
            self._spool(rows, reason="shutdown")
        self._close_segment()
        with self._cond:  # everything is in the database or the spool now
            self._close_wal()
        self.metrics.queue_depth(0)

    def queued(self) -> int:
        with self._cond:
            return self._queued

    def spooled_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("spool-*.jsonl")) if self.spool_dir.is_dir() else []

    def _replayable_files(self) -> list[Path]:
        """Spool segments and the write-ahead segments of dead processes (live ones hold an flock)."""
        if not self.spool_dir.is_dir():
            return []
        return sorted(p for p in self.spool_dir.glob("*.jsonl") if p != self._wal_path)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except SQLAlchemyError as exc:
            self.last_db_error = _one_line(exc)
            return False

    # ---- writer thread
    def _run(self) -> None:
        while True:
            with self._cond:
                if (
                    not self._stop
                    and self._queued < self.batch_size
                    and self._flushed >= self._flush_requested
                ):
                    self._cond.wait(self.flush_seconds)
                stopping = self._stop
                flush_target = self._flush_requested
                batch = self._take(self.batch_size * 4 if stopping else self.batch_size)
            if batch:
                self._write([r for item in batch for r in item.rows()], batch)
            if self._queued_snapshot() == 0:
                with self._cond:
                    if self._queued == 0 and self._wal_dirty:
                        self._wal_written()
                    if self._flushed < flush_target:
                        self._flushed = flush_target
                        self._cond.notify_all()
                if stopping:
                    return
                self._maybe_replay()
            elif stopping and not self.db_ok and time.monotonic() < self._next_retry:
                # database down at shutdown: spool the rest without waiting for it
                with self._cond:
                    rest = self._take(10**12)
                self._spool([r for item in rest for r in item.rows()], reason="shutdown")
                self._forget(rest)

    def _queued_snapshot(self) -> int:
        with self._cond:
            return self._queued

    def _take(self, limit: int) -> list[_Item]:
        out, n = [], 0
        while self._items and n < limit:
            item = self._items.popleft()
            out.append(item)
            n += len(item.records)
        self._queued -= n
        self.metrics.queue_depth(self._queued)
        return out

    def _forget(self, items: list[_Item]) -> None:
        with self._cond:
            for item in items:
                self._pending[item.request_id] -= len(item.records)
                if self._pending[item.request_id] <= 0:
                    del self._pending[item.request_id]

    def _write(self, rows: list[Row], items: list[_Item]) -> None:
        if self.db_ok or time.monotonic() >= self._next_retry:
            try:
                self._insert(rows)
                self.metrics.written(len(rows))
                self._db_state(True)
                self._forget(items)
                return
            except SQLAlchemyError as exc:
                self._db_state(False, exc)
        self._spool(rows, reason="database unavailable")
        self._forget(items)

    def _db_state(self, ok: bool, exc: Exception | None = None) -> None:
        if ok and not self.db_ok:
            log.info("prediction log: database reachable again")
        if not ok:
            self._next_retry = time.monotonic() + self.RETRY_SECONDS
            self.last_db_error = _one_line(exc) if exc else "unreachable"
            if self.db_ok:
                log.error(
                    "prediction log: database unavailable, spooling to %s: %s",
                    self.spool_dir,
                    self.last_db_error,
                )
        self.db_ok = ok
        self.metrics.db_up(ok)

    def _ensure_tables(self) -> bool:
        if self._tables_ready:
            return True
        try:
            create_tables(self.engine)
            self._tables_ready = True
        except SQLAlchemyError as exc:
            self._db_state(False, exc)
        return self._tables_ready

    def _insert(self, rows: list[Row]) -> None:
        if not self._ensure_tables():
            raise SQLAlchemyError(self.last_db_error or "cannot create tables")
        if self.engine.dialect.name == "sqlite":
            self._insert_sqlite(rows)
            return
        stmt = _insert_ignoring_duplicates(self.engine, predictions)
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

    _SQLITE_INSERT = (
        f"INSERT OR IGNORE INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    )

    def _insert_sqlite(self, rows: list[Row]) -> None:
        """SQLite: one DBAPI executemany of tuples, each value bound by its column's own SQLAlchemy type
        processor (so rows read back exactly as Core would have written them; unit-tested), applied column
        by column: a column of repeated values (created_at, names) is processed once per distinct value."""
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

    # ---- spool
    def _spool(self, rows: list[Row], reason: str) -> None:
        if not rows:
            return
        data = "".join(_row_to_json(r) + "\n" for r in rows)
        with self._spool_lock:
            try:
                if self._segment is None:
                    self._segment = self._open_segment()
                self._segment.write(data)
                self._segment.flush()
                os.fsync(self._segment.fileno())
            except OSError as exc:
                self.metrics.dropped(len(rows))
                log.error(
                    "prediction log: DROPPED %d records (%s; spool write failed: %s)", len(rows), reason, exc
                )
                return
        self.metrics.spooled(len(rows))
        log.warning("prediction log: spooled %d records (%s)", len(rows), reason)

    # ---- write-ahead segment (the caller holds self._cond)
    def _write_ahead(self, item: _Item) -> None:
        """Append the records to this process's write-ahead segment before the answer leaves, so that a
        killed worker (SIGKILL, OOM) loses no answered record: once its flock is gone, any process
        replays the segment like a spool segment (inserts ignore duplicates). A plain write, no fsync:
        it covers the process dying, not the host. Emptied whenever the queue has been written out."""
        data = "".join(_row_to_json(r) + "\n" for r in item.rows()).encode()
        try:
            if self._wal is None:
                self._wal = self._open_segment(prefix="wal")
                self._wal_path = Path(self._wal.name).with_suffix(".jsonl")
            os.write(self._wal.fileno(), data)
            self._wal_dirty = True
        except OSError as exc:
            log.error("prediction log: write-ahead append failed (%s); record kept in memory only", exc)

    def _wal_written(self) -> None:
        try:
            os.ftruncate(self._wal.fileno(), 0)
            self._wal_dirty = False
        except (OSError, AttributeError) as exc:
            log.error("prediction log: cannot empty the write-ahead segment: %s", exc)

    def _close_wal(self) -> None:
        if self._wal is not None:
            if self._wal_path is not None:
                self._wal_path.unlink(missing_ok=True)  # before the flock goes: nobody replays it
            self._wal.close()
            self._wal, self._wal_path, self._wal_dirty = None, None, False

    def _open_segment(self, prefix: str = "spool"):
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{prefix}-{os.getpid()}-{time.time_ns()}"
        tmp = self.spool_dir / f"{stem}.open"
        f = open(tmp, "a", encoding="utf-8")  # noqa: SIM115 - held open while it is the current segment
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        os.replace(tmp, self.spool_dir / f"{stem}.jsonl")  # visible to replayers only once locked
        return f

    def _close_segment(self) -> None:
        with self._spool_lock:
            if self._segment is not None:
                self._segment.close()  # releases the flock
                self._segment = None

    def _maybe_replay(self) -> None:
        if not self.spool_dir.is_dir():
            return
        if not self.db_ok and time.monotonic() < self._next_retry:
            return
        files = self._replayable_files()
        if not files:
            return
        if not self.ping():
            self._db_state(False, SQLAlchemyError(self.last_db_error or "unreachable"))
            return
        self._close_segment()  # our own segment becomes replayable too
        for path in files:
            if not self._replay_file(path):
                return

    def _replay_file(self, path: Path) -> bool:
        try:
            f = open(path, encoding="utf-8")  # noqa: SIM115
        except FileNotFoundError:
            return True
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True  # being written or replayed by another process
            if not path.exists():  # replayed and deleted by another process meanwhile
                return True
            rows, bad = [], 0
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(_row_from_json(line))
                except (ValueError, KeyError):
                    bad += 1  # a torn last line from a crash: keep it out, keep the rest
            try:
                for start in range(0, len(rows), self.batch_size):
                    self._insert(rows[start : start + self.batch_size])
            except SQLAlchemyError as exc:
                self._db_state(False, exc)
                return False
            if bad:
                Path(str(path) + ".corrupt").write_text(f"{bad} unreadable lines in {path.name}\n")
                log.error("prediction log: %d unreadable lines in spool file %s", bad, path)
            path.unlink()
        self._db_state(True)
        self.metrics.replayed(len(rows))
        log.info("prediction log: replayed %d spooled records from %s", len(rows), path.name)
        return True


def _one_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]


def now() -> datetime:
    return datetime.now(UTC)
