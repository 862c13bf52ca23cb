"""The prediction log writer: batches, flush, spool while the database is down, replay, close."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from model_service.prediction_log import (
    PredictionLog,
    make_engine,
    new_request_id,
    predictions,
    request_id_age,
)

DOWN = "postgresql+psycopg2://nobody@127.0.0.1:9/none"  # nothing listens on port 9


def _submit(log: PredictionLog, n: int = 3) -> str:
    rid = new_request_id()
    log.submit(
        rid,
        datetime.now(UTC),
        "m",
        "1",
        [{"x": i} for i in range(n)],
        np.full(n, 0.25),
        np.zeros(n, dtype=int),
        1.5,
    )
    return rid


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(predictions)).scalar_one()


def test_request_ids_are_uuid7_with_their_age():
    rid = new_request_id()
    assert len(rid) == 36 and rid[14] == "7"
    assert 0 <= request_id_age(rid) < 1
    assert request_id_age("6f1c2b1e-0000-4000-8000-000000000000") is None
    assert len({new_request_id() for _ in range(1000)}) == 1000


def test_records_are_written_in_batches(tmp_path):
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool", batch_size=50).start()
    rids = [_submit(log) for _ in range(40)]
    assert log.is_pending(rids[-1]) or _count(log.engine) > 0
    assert log.flush(10)
    assert _count(log.engine) == 120 and not log.is_pending(rids[-1])
    log.close()


def test_database_down_spools_then_replays_once(tmp_path):
    good = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    log = PredictionLog(DOWN, tmp_path / "spool", batch_size=10, flush_seconds=0.05).start()
    log.RETRY_SECONDS = 0.2
    for _ in range(5):
        _submit(log)
    log.flush(15)
    assert not log.db_ok and log.spooled_files()
    log.engine = good  # the database is back
    log._tables_ready = False
    _submit(log)
    deadline = time.monotonic() + 15
    while (_count(good) if _tables(good) else 0) < 18 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _count(good) == 18
    assert log.spooled_files() == []
    log.close()
    assert _count(good) == 18  # replay used "on conflict do nothing": nothing twice


def _tables(engine) -> bool:
    from sqlalchemy import inspect

    return inspect(engine).has_table("predictions")


def test_close_spools_what_the_database_cannot_take(tmp_path):
    log = PredictionLog(DOWN, tmp_path / "spool", batch_size=1000, flush_seconds=5).start()
    for _ in range(4):
        _submit(log, 5)
    log.close(timeout=20)
    lines = sum(len(p.read_text().splitlines()) for p in log.spooled_files())
    assert lines == 20


def test_a_full_queue_spools_instead_of_dropping(tmp_path):
    log = PredictionLog(DOWN, tmp_path / "spool", queue_size=4)  # writer not started: the queue only fills
    log.spool_dir.mkdir(parents=True)
    _submit(log, 3)
    _submit(log, 3)  # over the bound: straight to the spool
    assert log.queued() == 3
    assert sum(len(p.read_text().splitlines()) for p in log.spooled_files()) == 3
    log.close(timeout=5)


def test_sqlite_fast_insert_stores_what_core_stores(tmp_path):
    """The SQLite executemany path stores exactly what SQLAlchemy Core's insert would: the same stored text
    in every column (features through the same orjson serializer, created_at through the same DateTime
    processor) and the same values read back."""
    from model_service.prediction_log import COLUMNS, _insert_ignoring_duplicates, _Item

    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool")
    log._ensure_tables()
    records = [
        {"a": 1, "b": None, "c": "x"},
        {"a": 0.1, "b": 2.5e-7, "c": 'Müller "q" \u2028'},
        {"a": 10**20, "b": 1e300, "c": ""},
        {"a": 10**30, "b": -0.0, "c": "Fiber optic"},  # beyond 64 bits: the json.dumps fallback
    ]
    rows = _Item(
        new_request_id(),
        datetime.now(UTC),
        "m",
        "7",
        records,
        np.array([0.3, 1 / 3, 0.0, 1.0]),
        np.array([1, 0, 0, 1]),
        2.5,
    ).rows()
    log._insert(rows)
    log._insert(rows)  # a replayed duplicate is ignored
    with log.engine.begin() as conn:
        conn.execute(
            _insert_ignoring_duplicates(log.engine, predictions),
            [{**dict(zip(COLUMNS, row, strict=True)), "request_id": "core"} for row in rows],
        )
        read = conn.execute(select(predictions).order_by(predictions.c.id)).all()
        raw = conn.exec_driver_sql(
            f"SELECT {', '.join(COLUMNS)} FROM predictions ORDER BY id"
        ).all()  # the stored text, not parsed back
    assert len(read) == 8
    fast, core = read[:4], read[4:]
    assert [r._mapping["request_id"] for r in fast] == [rows[0][0]] * 4
    assert [r._mapping["features"] for r in fast] == records
    skip = ("id", "request_id")
    for f, c in zip(fast, core, strict=True):
        assert {k: v for k, v in f._mapping.items() if k not in skip} == {
            k: v for k, v in c._mapping.items() if k not in skip
        }
    assert [r[1:] for r in raw[:4]] == [r[1:] for r in raw[4:]]


def test_spool_lines_round_trip_rows(tmp_path):
    """A spooled row reads back as the same row (and old dict-shaped spool lines still read)."""
    from model_service.prediction_log import _Item, _row_from_json, _row_to_json

    rows = _Item(
        new_request_id(),
        datetime.now(UTC),
        "m",
        "3",
        [{"a": 1, "b": None}, {"a": 10**30, "b": "é"}],
        np.array([0.25, 0.75]),
        np.array([0, 1]),
        1.25,
    ).rows()
    assert [_row_from_json(_row_to_json(r)) for r in rows] == rows


def test_a_killed_process_loses_no_accepted_record(tmp_path):
    """SIGKILL before the writer got to the queue: the process's write-ahead segment is replayed (found by
    the live stack test: a replica killed under traffic lost the records still queued in memory)."""
    import signal
    import subprocess
    import sys

    url, spool = f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool"
    child = (
        "import os, signal, sys; from tests.unit.test_service_log import _submit; "
        "from model_service.prediction_log import PredictionLog; "
        f"log = PredictionLog({url!r}, {str(spool)!r}, batch_size=10**6, flush_seconds=3600).start(); "
        "[_submit(log) for _ in range(20)]; sys.stdout.flush(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    out = subprocess.run([sys.executable, "-c", child], cwd=Path(__file__).resolve().parents[2], check=False)
    assert out.returncode == -signal.SIGKILL
    survivor = PredictionLog(url, spool).start()
    deadline = time.monotonic() + 10
    while _count(survivor.engine) < 60 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _count(survivor.engine) == 60
    survivor.close()
    assert not list(spool.rglob("*.jsonl")), "replayed and closed segments are deleted"
