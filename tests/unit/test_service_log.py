"""The prediction log: durable acceptance (spool segment synced before submit returns), batches, flush,
records kept in the spool while the database is down, replay (of a killed process's segment too), close."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import func, select

from core.store import insert_ignoring_duplicates, make_engine, predictions
from model_service.prediction_log.request_ids import new_request_id, request_id_age
from model_service.prediction_log.spool import item_to_json, row_from_json, row_to_json, rows_from_line
from model_service.prediction_log.store import COLUMNS, Item, LogStore
from model_service.prediction_log.writer import PredictionLog

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


def _records_in(paths) -> int:
    return sum(len(rows_from_line(line)) for p in paths for line in p.read_text().splitlines())


def _spool_lines(log: PredictionLog) -> int:
    """Records in every segment on disk (open ones included)."""
    return _records_in(log.spool_dir.glob("*.jsonl"))


def _first_sync_fails(monkeypatch) -> list[int]:
    """os.fdatasync raises EIO on its first call and syncs after; the fds it was called with."""
    calls: list[int] = []
    real = os.fdatasync

    def flaky(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(5, "I/O error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", flaky)
    return calls


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(predictions)).scalar_one()


def test_request_ids_are_uuid7_with_their_age():
    rid = new_request_id()
    assert len(rid) == 36 and rid[14] == "7"
    parsed = uuid.UUID(rid)
    assert str(parsed) == rid and parsed.version == 7 and parsed.variant == uuid.RFC_4122
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
    assert not log.db_ok and _spool_lines(log) == 15
    log.store = LogStore(log.url, engine=good)  # the database is back
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
    assert _records_in(log.spooled_files()) == 20  # closed, kept, replayable


def test_written_segments_are_deleted(tmp_path):
    """Segments whose records are all in the database do not pile up: retired past their size, deleted."""
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool", batch_size=7)
    log.spool.segment_bytes = 2000  # a few requests a segment
    log.start()
    for _ in range(30):
        _submit(log, 3)
    assert log.flush(10)
    assert len(list(log.spool_dir.glob("*.jsonl"))) <= 1  # the current one at most
    log.close()
    assert _count(log.engine) == 90
    assert list(log.spool_dir.iterdir()) == []


def test_submit_returns_once_the_records_are_on_disk(tmp_path):
    """What a request was answered for is in its segment before submit returns, writer or not."""
    log = PredictionLog(DOWN, tmp_path / "spool")  # writer not started: nothing leaves memory but the spool
    rid = _submit(log, 4)
    lines = [
        r
        for p in log.spool_dir.glob("*.jsonl")
        for line in p.read_text().splitlines()
        for r in rows_from_line(line)
    ]
    assert [(r[0], r[1]) for r in lines] == [(rid, i) for i in range(4)]
    assert log.spool.find(rid, 3)[1] == 3 and log.spool.find(rid, 4) is None
    log.close(timeout=5)


def test_log_sync_write_does_not_sync(tmp_path, monkeypatch):
    def no_sync(_fd):
        raise AssertionError("LOG_SYNC=write must not fdatasync on the request path")

    monkeypatch.setattr(os, "fdatasync", no_sync)
    log = PredictionLog(DOWN, tmp_path / "spool", fsync=False)
    _submit(log, 2)
    assert _spool_lines(log) == 2
    monkeypatch.undo()
    log.close(timeout=5)


def test_sync_written_syncs_each_segment_with_new_lines_once(tmp_path, monkeypatch):
    """LOG_SYNC=write's background sync: a segment is synced when it holds lines no sync covered, and
    not again until new lines arrive."""
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    log = PredictionLog(DOWN, tmp_path / "spool", fsync=False)  # writer not started
    assert log.spool.sync_written() == 0  # no segment yet
    _submit(log, 2)
    seg = log.spool._current
    assert log.spool.sync_written() == 1 and synced == [seg.fd]
    assert seg.synced == seg.written == 1
    assert log.spool.sync_written() == 0 and len(synced) == 1  # nothing new
    _submit(log, 1)
    _submit(log, 1)
    assert log.spool.sync_written() == 1 and seg.synced == 3
    log.close(timeout=5)


def test_a_failed_background_sync_is_tried_again(tmp_path, monkeypatch):
    calls = _first_sync_fails(monkeypatch)
    log = PredictionLog(DOWN, tmp_path / "spool", fsync=False)
    _submit(log, 1)
    assert log.spool.sync_written() == 0 and log.spool._current.synced == 0
    assert log.spool.sync_written() == 1 and log.spool._current.synced == 1
    assert len(calls) == 2
    log.close(timeout=5)


def test_log_sync_write_syncs_in_the_background(tmp_path, monkeypatch):
    """With LOG_SYNC=write and LOG_SYNC_SECONDS > 0 a thread of the log syncs the segment after the
    request returned (bounding what a power loss can take); with fsync there is no such thread."""
    done = threading.Event()
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (real(fd), done.set()))
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, tmp_path / "spool", fsync=False, sync_seconds=0.01).start()
    _submit(log, 2)
    assert done.wait(30), "no background sync"
    seg = log.spool._open[0]
    assert seg.synced >= 1
    log.close(timeout=10)
    assert log._sync_thread is not None and not log._sync_thread.is_alive()
    strict = PredictionLog(url, tmp_path / "spool2", fsync=True, sync_seconds=0.01).start()
    assert strict._sync_thread is None
    strict.close(timeout=10)


def test_concurrent_submits_share_a_sync(tmp_path, monkeypatch):
    """Group commit: requests arriving during a sync wait for the next one instead of each syncing."""
    syncs = []
    real = os.fdatasync

    def slow_sync(fd):
        syncs.append(fd)
        time.sleep(0.02)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_sync)
    log = PredictionLog(DOWN, tmp_path / "spool")
    threads = [threading.Thread(target=lambda: [_submit(log, 1) for _ in range(10)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _spool_lines(log) == 80
    assert len(syncs) < 80
    log.close(timeout=5)


def test_a_line_written_during_a_sync_does_not_wait_for_it(tmp_path, monkeypatch):
    """The running sync may have started before this line was written, so it does not cover it: the
    request starts its own sync at once (overlapping) instead of queueing behind the running one."""
    first_started, release_first = threading.Event(), threading.Event()
    calls = []
    real = os.fdatasync

    def sync(fd):
        calls.append(fd)
        if len(calls) == 1:
            first_started.set()
            release_first.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", sync)
    log = PredictionLog(DOWN, tmp_path / "spool")
    slow = threading.Thread(target=_submit, args=(log, 1))
    slow.start()
    assert first_started.wait(10)
    done = threading.Event()
    fast = threading.Thread(target=lambda: (_submit(log, 1), done.set()))
    fast.start()
    assert done.wait(10), "the second request waited for a sync that does not cover its line"
    assert slow.is_alive() and len(calls) == 2
    release_first.set()
    slow.join(10)
    fast.join(10)
    assert _spool_lines(log) == 2
    log.close(timeout=5)


def test_a_failed_sync_fails_only_its_caller_and_the_others_sync_again(tmp_path, monkeypatch):
    """A sync that raises answers its own request 503 (LogUnavailable); a request it covered syncs by
    itself rather than waiting forever."""
    from model_service.prediction_log.writer import LogUnavailable

    calls = _first_sync_fails(monkeypatch)
    log = PredictionLog(DOWN, tmp_path / "spool")
    with pytest.raises(LogUnavailable):
        _submit(log, 1)
    _submit(log, 1)  # syncs for itself
    assert len(calls) == 2
    log.close(timeout=5)


@pytest.mark.parametrize("fsync", [True, False], ids=["LOG_SYNC=fsync", "LOG_SYNC=write"])
def test_a_killed_process_loses_no_accepted_record(tmp_path, fsync):
    """A process SIGKILLed right after accepting (records queued, nothing written to the database) leaves
    its segment; another process replays it exactly once. Without fsync too: the kernel keeps what a
    killed process wrote."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker about to be killed
        os.close(read)
        victim = PredictionLog(url, tmp_path / "spool", flush_seconds=60, fsync=fsync)  # writer not started
        victim.spool_dir.mkdir(parents=True, exist_ok=True)
        rids = [_submit(victim, 3) for _ in range(5)]
        os.write(write, ",".join(rids).encode())
        os.close(write)
        os.kill(os.getpid(), signal.SIGKILL)
    os.close(write)
    with os.fdopen(read) as f:
        accepted = f.read().split(",")
    os.waitpid(pid, 0)
    assert len(accepted) == 5
    survivor = PredictionLog(url, tmp_path / "spool", flush_seconds=0.05)
    survivor.REPLAY_CHECK_SECONDS = 0.1
    survivor.start()
    deadline = time.monotonic() + 15
    while survivor.spooled_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    survivor.close()
    with survivor.engine.connect() as conn:
        rows = conn.execute(
            select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id)
        ).all()
    assert dict(rows) == dict.fromkeys(accepted, 3)


def test_a_full_queue_spools_instead_of_dropping(tmp_path):
    log = PredictionLog(DOWN, tmp_path / "spool", queue_size=6)  # writer not started: the queue only fills
    log.spool_dir.mkdir(parents=True)
    _submit(log, 3)
    _submit(log, 3)  # exactly full: still queued
    assert log.queued() == 6 and not log.spool._current.dirty
    rid = _submit(log, 3)  # over the bound: only in the spool (to replay)
    assert log.queued() == 6 and log.spool._current.dirty and not log.is_pending(rid)
    assert _spool_lines(log) == 9
    log.close(timeout=5)
    assert _records_in(log.spooled_files()) == 9


def test_sqlite_fast_insert_stores_what_core_stores(tmp_path):
    """The SQLite executemany path stores exactly what SQLAlchemy Core's insert would: the same stored text
    in every column (features through the same orjson serializer, created_at through the same DateTime
    processor) and the same values read back."""
    store = LogStore(f"sqlite:///{tmp_path / 'p.db'}")
    store.ensure_tables()
    records = [
        {"a": 1, "b": None, "c": "x"},
        {"a": 0.1, "b": 2.5e-7, "c": 'Müller "q" \u2028'},
        {"a": 10**20, "b": 1e300, "c": ""},
        {"a": 10**30, "b": -0.0, "c": "Fiber optic"},  # beyond 64 bits: the json.dumps fallback
    ]
    rows = Item(
        new_request_id(),
        datetime.now(UTC),
        "m",
        "7",
        records,
        np.array([0.3, 1 / 3, 0.0, 1.0]),
        np.array([1, 0, 0, 1]),
        2.5,
    ).rows()
    store.insert(rows)
    store.insert(rows)  # a replayed duplicate is ignored
    with store.engine.begin() as conn:
        conn.execute(
            insert_ignoring_duplicates(store.engine, predictions),
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


def sample_item() -> Item:
    """A request of two records whose values test the JSON round trip (null, a huge int, non-ASCII)."""
    return Item(
        new_request_id(),
        datetime.now(UTC),
        "m",
        "3",
        [{"a": 1, "b": None}, {"a": 10**30, "b": "é"}],
        np.array([0.25, 0.75]),
        np.array([0, 1]),
        1.25,
    )


def test_spool_lines_round_trip_rows(tmp_path):
    """A spooled row reads back as the same row (and old dict-shaped spool lines still read)."""
    rows = sample_item().rows()
    assert [row_from_json(row_to_json(r)) for r in rows] == rows


def test_a_request_line_round_trips_its_rows_and_old_row_lines_still_read():
    item = sample_item()
    assert rows_from_line(item_to_json(item)) == item.rows()
    assert [r for row in item.rows() for r in rows_from_line(row_to_json(row))] == item.rows()
