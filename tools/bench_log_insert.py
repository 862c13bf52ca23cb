"""Bulk insert paths of the prediction log, measured (issue 26, item 1): which one the writer process uses.

    python -m tools.bench_log_insert [--records 60000] [--postgres postgresql+psycopg2://...]

For SQLite (a fresh file) and, given a URL, PostgreSQL (a fresh table in that database: it is dropped
and created), inserts `--records` prediction rows (the Telco example record, 1,000 records per request
as the service logs them) in chunks of one spool segment's rows, each chunk one transaction, and prints
rows/s per path:

- PostgreSQL `copy`: `LogStore._insert_copy` (COPY CSV into a temporary table, then INSERT ... SELECT ...
  ON CONFLICT DO NOTHING); `insert-many`: `LogStore.insert_many` (Core insert-many with ON CONFLICT DO
  NOTHING: psycopg2's batched VALUES);
- SQLite `executemany`: `LogStore._insert_sqlite` (INSERT OR IGNORE, one executemany per transaction);
  `insert-many`: Core's insert-many, for comparison;
- `writer`: the writer process's whole path (`SegmentWriter.drain`: read the segments, parse the JSON
  lines, insert, delete), from segments written by a worker's `PredictionLog`.

Not a test and not in `make`: a measurement to run on an idle machine; the figures vary with the load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import text

from core.dataset import load_config
from core.store import create_tables
from model_service.prediction_log.request_ids import new_request_id
from model_service.prediction_log.spool import SEGMENT_BYTES, item_to_json
from model_service.prediction_log.store import Item, LogStore
from model_service.prediction_log.writer import PredictionLog
from model_service.prediction_log.writer_process import SegmentWriter

REPO = Path(__file__).resolve().parents[1]
PER_REQUEST = 1000


def _items(records: int) -> list[Item]:
    record = load_config(REPO / "config" / "telco_churn.yaml").example_record
    now = datetime.now(UTC)
    scores = np.linspace(0.01, 0.99, PER_REQUEST)
    return [
        Item(
            new_request_id(),
            now,
            "telco-churn",
            "3",
            [record] * PER_REQUEST,
            scores,
            (scores >= 0.5).astype(int),
            4.2,
        )
        for _ in range(records // PER_REQUEST)
    ]


def _reset(store: LogStore) -> None:
    if store.engine.dialect.name != "sqlite":
        with store.engine.begin() as conn:
            conn.execute(text("TRUNCATE predictions"))


def _time(insert, chunks: list[list[tuple]]) -> float:
    start = time.perf_counter()
    for chunk in chunks:
        insert(chunk)
    return sum(map(len, chunks)) / (time.perf_counter() - start)


def _writer(url: str, items: list[Item], root: Path) -> float:
    log = PredictionLog(url, root / "spool", fsync=False, segment_seconds=3600)
    for it in items:
        log.submit(
            it.request_id,
            it.created_at,
            it.model_name,
            it.model_version,
            it.records,
            it.scores,
            it.labels,
            1.0,
        )
    log.close()
    writer = SegmentWriter(url, root / "spool", engine=log.engine)
    start = time.perf_counter()
    moved = writer.drain()
    elapsed = time.perf_counter() - start
    assert moved == sum(len(it.records) for it in items) and not writer.waiting()
    return moved / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--postgres", help="a PostgreSQL URL whose predictions table may be emptied")
    args = parser.parse_args(argv)
    items = _items(args.records)
    rows = [r for it in items for r in it.rows()]
    per_segment = max(1, SEGMENT_BYTES // len(item_to_json(items[0]).encode()) * PER_REQUEST)
    chunks = [rows[i : i + per_segment] for i in range(0, len(rows), per_segment)]
    print(
        f"{len(rows)} rows, {len(chunks)} transactions of up to {per_segment} rows (one spool segment each)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        root = Path(tmp)
        targets = [("sqlite", lambda name: f"sqlite:///{root / name}.db")]
        if args.postgres:
            targets.append(("postgresql", lambda _name: args.postgres))
        for backend, url_for in targets:
            results = {}
            store = LogStore(url_for("paths"))
            create_tables(store.engine)
            store.tables_ready = True
            fast = store._insert_sqlite if backend == "sqlite" else store._insert_copy
            for name, insert in (
                ("executemany" if backend == "sqlite" else "copy", fast),
                ("insert-many", store.insert_many),
            ):
                _reset(store)
                if backend == "sqlite":  # a fresh file per path
                    store = LogStore(url_for(name))
                    create_tables(store.engine)
                    insert = store._insert_sqlite if name == "executemany" else store.insert_many
                results[name] = _time(insert, chunks)
            _reset(store)
            results["writer (read + parse + insert + delete)"] = _writer(
                url_for("writer"), items, root / backend
            )
            for name, rate in results.items():
                print(f"{backend:10s} {name:40s} {rate:>10,.0f} rows/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
