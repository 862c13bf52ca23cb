"""Retention of the prediction log: days past LOG_RETENTION_DAYS go to a Parquet archive, then leave the database.

`run_retention(engine, archive, days)` handles `predictions` and `shadow_predictions` by `created_at`,
`feedback` by `received_at`. Every UTC day entirely older than the window (before midnight of today minus
`days`) is written to the archive (`core.objects.ObjectStore`: a folder or `s3://bucket/prefix`) as
hive-partitioned Parquet, one folder per table and day:

    predictions/day=2026-11-01/part-00000000000000012345.parquet
    feedback/day=2026-11-01/part-....parquet

readable by `pd.read_parquet(folder)`, Spark (`spark.read.parquet`, `day` as a partition column) and
pyarrow datasets. A part's columns are the table's (features as its JSON text; parts written before
migration 0006 lack `event_at`, which `read_archive` fills from created_at / received_at); its name is
the first row id it holds, so parts of one day never overlap.

Then the archived rows are deleted by primary key, `batch` ids per transaction (each a short write lock:
the service's inserts wait at most one batch).

Crash-safe and idempotent: before writing a day, the ids already in that day's parts are read back; only
rows not archived yet are written, and only ids read back from a part (an earlier run's or this one's)
are deleted. A run killed between the write and the deletes, or between two delete batches, leaves rows
that are both archived and in the database; the next run deletes them without writing them again.

Readers: `read_archive` (a table's archived rows, optionally only some days and columns) and
`with_archive` (database rows plus archived rows as one frame) are what older-record readers use
(core.store.labelled_predictions, the guard's previous-version figures, a late label's check).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Engine, Table, delete, func, select

from core.objects import ObjectStore, S3Access

log = logging.getLogger("core.retention")

PART_ROWS = 200_000  # rows per Parquet part (a day at 100 records/s is ~43 parts)


def tables() -> dict[str, tuple[Table, str]]:
    from core import store

    return {
        "predictions": (store.predictions, "created_at"),
        "feedback": (store.feedback, "received_at"),
        "shadow_predictions": (store.shadow_predictions, "created_at"),
    }


def archive_store(settings: Any) -> ObjectStore:
    """The archive at LOG_ARCHIVE_URI, with the settings' S3 access."""
    return ObjectStore(settings.log_archive_uri, S3Access.of(settings))


def cutoff(days: int, now: datetime | None = None) -> datetime:
    """Midnight (UTC) of the first day kept: every row before it is past the window."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return datetime.combine(now.date() - timedelta(days=days), datetime.min.time(), tzinfo=UTC)


def _part_name(table: str, day: date, first_id: int) -> str:
    return f"{table}/day={day.isoformat()}/part-{first_id:020d}.parquet"


def _day_of(name: str) -> date | None:
    for piece in name.split("/"):
        if piece.startswith("day="):
            try:
                return date.fromisoformat(piece[4:])
            except ValueError:
                return None
    return None


def _arrow_table(table: Table, rows: list[Any]) -> pa.Table:
    columns: dict[str, list[Any]] = {c.name: [] for c in table.columns}
    for row in rows:
        for c in table.columns:
            value = row._mapping[c.name]
            if c.name == "features" and not isinstance(value, str):
                value = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, datetime):
                value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            columns[c.name].append(value)
    fields = []
    for c in table.columns:
        kind = type(c.type).__name__.lower()
        if c.name == "features" or kind in ("string", "text", "json"):
            typ = pa.string()
        elif kind == "datetime":
            typ = pa.timestamp("us", tz="UTC")
        elif kind == "float":
            typ = pa.float64()
        else:
            typ = pa.int64()
        fields.append(pa.field(c.name, typ, nullable=bool(c.nullable)))
    return pa.table(
        {f.name: pa.array(columns[f.name], type=f.type) for f in fields}, schema=pa.schema(fields)
    )


def _parquet(data: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(data, buf, compression="zstd")
    return buf.getvalue()


def _ids_in(archive: ObjectStore, name: str) -> list[int]:
    return pq.read_table(io.BytesIO(archive.get(name)), columns=["id"]).column("id").to_pylist()


@dataclass
class TableResult:
    days: int = 0
    archived: int = 0  # rows written to the archive by this run
    deleted: int = 0  # rows deleted from the database by this run
    bytes: int = 0  # Parquet bytes written
    delete_seconds: float = 0.0  # of which spent in the batched deletes


@dataclass
class RetentionResult:
    cutoff: datetime
    tables: dict[str, TableResult] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        parts = [
            f"{name}: {r.archived} archived, {r.deleted} deleted ({r.days} days, {r.bytes} bytes)"
            for name, r in self.tables.items()
        ]
        return f"retention before {self.cutoff:%Y-%m-%d}: " + "; ".join(parts) + f" in {self.seconds:.2f}s"


def _delete(engine: Engine, table: Table, ids: list[int], batch: int, pause: float) -> int:
    deleted = 0
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        with engine.begin() as conn:  # one short transaction per batch
            deleted += conn.execute(delete(table).where(table.c.id.in_(chunk))).rowcount or 0
        if pause:
            time.sleep(pause)
    return deleted


def archive_table(
    engine: Engine,
    archive: ObjectStore,
    name: str,
    before: datetime,
    batch: int = 2000,
    pause: float = 0.0,
) -> TableResult:
    """Archive then delete every row of table `name` older than `before` (a UTC midnight), day by day."""
    table, column = tables()[name]
    when = table.c[column]
    result = TableResult()
    start = None
    while True:
        with engine.connect() as conn:  # the next day holding rows (no query per empty day)
            after = [when < before] if start is None else [when < before, when >= start + timedelta(days=1)]
            oldest = conn.execute(select(func.min(when)).where(*after)).scalar()
        if oldest is None:
            return result
        oldest = oldest.replace(tzinfo=UTC) if oldest.tzinfo is None else oldest.astimezone(UTC)
        day = oldest.date()
        start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        end = min(start + timedelta(days=1), before)
        done = _archive_day(engine, archive, name, table, when, day, start, end, batch, pause)
        if done is not None:
            result.days += 1
            result.archived += done.archived
            result.deleted += done.deleted
            result.bytes += done.bytes
            result.delete_seconds += done.delete_seconds


def _archive_day(engine, archive, name, table, when, day, start, end, batch, pause) -> TableResult | None:
    with engine.connect() as conn:
        ids = (
            conn.execute(select(table.c.id).where(when >= start, when < end).order_by(table.c.id))
            .scalars()
            .all()
        )
    if not ids:
        return None
    result = TableResult()
    archived: set[int] = set()
    for part in archive.names(f"{name}/day={day.isoformat()}/"):
        if part.endswith(".parquet"):
            archived.update(_ids_in(archive, part))
    fresh = [i for i in ids if i not in archived]
    for offset in range(0, len(fresh), PART_ROWS):
        chunk = fresh[offset : offset + PART_ROWS]
        rows = []
        with engine.connect() as conn:
            for sub in range(0, len(chunk), 10_000):  # bound the IN list
                rows += conn.execute(
                    select(table).where(table.c.id.in_(chunk[sub : sub + 10_000])).order_by(table.c.id)
                ).all()
        if not rows:
            continue
        content = _parquet(_arrow_table(table, rows))
        part = _part_name(name, day, rows[0].id)
        archive.put(part, content)
        written = _ids_in(archive, part)  # delete only what the archive really holds
        archived.update(written)
        result.archived += len(written)
        result.bytes += len(content)
    started = time.perf_counter()
    result.deleted = _delete(engine, table, [i for i in ids if i in archived], batch, pause)
    result.delete_seconds = time.perf_counter() - started
    return result


def run_retention(
    engine: Engine,
    archive: ObjectStore,
    days: int,
    *,
    now: datetime | None = None,
    batch: int = 2000,
    pause: float = 0.0,
) -> RetentionResult:
    """Archive and delete every day of the prediction log, feedback and shadow scores past `days`."""
    started = time.perf_counter()
    result = RetentionResult(cutoff(days, now))
    for name in ("predictions", "shadow_predictions", "feedback"):
        result.tables[name] = archive_table(engine, archive, name, result.cutoff, batch, pause)
    result.seconds = time.perf_counter() - started
    log.info("%s", result.line())
    return result


def run_from_settings(settings: Any, now: datetime | None = None) -> RetentionResult | None:
    """The job as the settings say (None when LOG_RETENTION_DAYS is 0: off)."""
    from core import store

    if settings.log_retention_days <= 0:
        return None
    engine = store.engine_for(settings.database_url)
    return run_retention(
        engine,
        archive_store(settings),
        settings.log_retention_days,
        now=now,
        batch=settings.log_retention_batch,
    )


# ---------------------------------------------------------------- readers


EVENT_TIME_TABLES = ("predictions", "feedback")  # tables with an `event_at` (business time) column
_EVENT_AT = pa.field("event_at", pa.timestamp("us", tz="UTC"), nullable=True)


def _read_part(
    data: bytes, name: str, columns: list[str] | None, filters: list[tuple[str, str, Any]] | None
) -> pa.Table:
    """One Parquet part's rows. Its `event_at` is read as COALESCE(event_at, created_at / received_at),
    in a part written before the column existed (migration 0006) too: there it is the processing time.
    `filters`: (column, op, value) conditions, all to hold."""
    if name not in EVENT_TIME_TABLES or (columns is not None and "event_at" not in columns):
        return pq.read_table(io.BytesIO(data), columns=columns, filters=filters)
    processed = tables()[name][1]
    present = "event_at" in pq.read_schema(io.BytesIO(data)).names
    wanted = None
    if columns is not None:
        wanted = list(dict.fromkeys([*(c for c in columns if present or c != "event_at"), processed]))
    # a filter on event_at applies to the coalesced value (once made); the others while reading
    later = [f for f in filters or [] if f[0] == "event_at"]
    early = [f for f in filters or [] if f[0] != "event_at"] or None
    table = pq.read_table(io.BytesIO(data), columns=wanted, filters=early)
    if present:
        at = table.schema.get_field_index("event_at")
        table = table.set_column(
            at, _EVENT_AT, pc.coalesce(table.column("event_at"), table.column(processed))
        )
    else:
        table = table.append_column(_EVENT_AT, table.column(processed))  # the table's last column
    if later:
        table = table.filter(pq.filters_to_expression(later))
    return table if columns is None else table.select(columns)


def read_archive(
    archive: ObjectStore | None,
    name: str,
    columns: list[str] | None = None,
    days: Iterable[date] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
) -> pd.DataFrame:
    """The archived rows of table `name` (only `days` when given; `filters`: pyarrow row filters),
    `created_at`/`received_at` as UTC timestamps, `features` as JSON text, `event_at` (predictions and
    feedback) coalesced with the processing time, parts archived before it existed included. Empty
    frame: nothing archived."""
    wanted = None if days is None else set(days)
    pieces = []
    if archive is not None:
        for part in archive.names(f"{name}/"):
            if not part.endswith(".parquet"):
                continue
            if wanted is not None and _day_of(part) not in wanted:
                continue
            data = _read_part(archive.get(part), name, columns, filters)
            if data.num_rows:
                pieces.append(data)
    if not pieces:
        table = tables()[name][0]
        return pd.DataFrame(columns=columns or [c.name for c in table.columns])
    return pa.concat_tables(pieces).to_pandas()


def archived_record(archive: ObjectStore, request_id: str, record_index: int, day: date) -> bool:
    """Is the prediction (request id, record index) in the archive's `day` (or the day either side)?"""
    days = [day - timedelta(days=1), day, day + timedelta(days=1)]
    found = read_archive(
        archive,
        "predictions",
        columns=["id"],
        days=days,
        filters=[("request_id", "=", request_id), ("record_index", "=", int(record_index))],
    )
    return len(found) > 0


def archive_of(settings: Any) -> ObjectStore | None:
    """The archive to read beside the database: None when retention is off and nothing was archived."""
    archive = archive_store(settings)
    if settings.log_retention_days > 0:
        return archive
    return archive if next(iter(archive.names("predictions/")), None) is not None else None


def archived_with_labels(
    engine: Engine,
    archive: ObjectStore | None,
    columns: list[str],
    filters: list[tuple[str, str, Any]] | None = None,
    labelled_only: bool = False,
) -> pd.DataFrame:
    """Archived predictions (`columns`, plus request_id, record_index, created_at, id) with their
    feedback label (`label_fb`, NaN: none), the label taken from the database's feedback or the archived
    feedback: a label that came after its prediction was archived is stored in the database and joins
    here (a record labelled twice keeps its first label). `labelled_only`: only labelled records, the
    others not even read into memory (a filter on their request ids). Empty frame when nothing matches."""
    from core import store

    keys = ["request_id", "record_index"]
    f = store.feedback
    with engine.connect() as conn:
        db_fb = pd.DataFrame(
            conn.execute(select(f.c.request_id, f.c.record_index, f.c.label, f.c.received_at)).all(),
            columns=[*keys, "label", "received_at"],
        )
    old_fb = read_archive(archive, "feedback", columns=[*keys, "label", "received_at"])
    labels = pd.concat([x for x in (old_fb, db_fb) if not x.empty] or [db_fb], ignore_index=True)
    labels = labels.drop_duplicates(keys, keep="first")[[*keys, "label"]].rename(
        columns={"label": "label_fb"}
    )
    labels["record_index"] = labels["record_index"].astype("int64")
    wanted = list(dict.fromkeys([*columns, "id", "created_at", *keys]))
    if labelled_only:
        if labels.empty:
            return pd.DataFrame(columns=[*wanted, "label_fb"])
        filters = [*(filters or []), ("request_id", "in", sorted(set(labels["request_id"])))]
    rows = read_archive(archive, "predictions", columns=wanted, filters=filters)
    if rows.empty:
        return rows.assign(label_fb=pd.Series(dtype=float))
    rows["record_index"] = rows["record_index"].astype("int64")
    merged = rows.merge(labels, on=keys, how="inner" if labelled_only else "left")
    merged["label_fb"] = merged["label_fb"].astype(float)
    return merged
