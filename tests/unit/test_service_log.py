"""The prediction log: durable acceptance (spool segment synced before submit returns), batches, flush,
records kept in the spool while the database is down, replay (of a killed process's segment too), close."""

from __future__ import annotations

import json
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
from model_service.prediction_log.writer_process import SegmentWriter

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


class Recorded:
    """A metrics stand-in that adds up what the log reports."""

    def __init__(self):
        self.counts: dict[str, float] = {}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def record(value=1, *_rest):
            self.counts[name] = self.counts.get(name, 0) + (value if isinstance(value, int | float) else 1)

        return record


def test_the_worker_only_spools_and_flush_moves_the_records(tmp_path):
    """submit writes nothing to the database (the writer process does); `flush` moves the spool in."""
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool", segment_seconds=60).start()
    for _ in range(40):
        _submit(log)
    assert _count(log.engine) == 0 and log.queued() == 120 and _spool_lines(log) == 120
    assert log.flush(10)
    assert _count(log.engine) == 120 and log.queued() == 0
    assert list(log.spool_dir.glob("*.jsonl")) == []
    log.close()


def test_database_down_the_writer_keeps_the_segments_then_moves_them_once(tmp_path):
    good = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    log = PredictionLog(DOWN, tmp_path / "spool")
    for _ in range(5):
        _submit(log)
    log.close()  # retired: the writer's now
    metrics = Recorded()
    writer = SegmentWriter(DOWN, tmp_path / "spool", metrics=metrics)
    assert writer.drain() == 0 and writer.db_ok is False
    assert _records_in(writer.closed()) == 15 and metrics.counts["spooled"] == 15
    assert writer.drain() == 0 and metrics.counts["spooled"] == 15  # counted once per segment
    writer.store = LogStore(DOWN, engine=good)  # the database is back
    assert writer.drain() == 0  # not before RETRY_SECONDS ...
    assert writer.drain(retry_now=True) == 15  # ... or when told
    assert _count(good) == 15 and writer.waiting() == [] and writer.db_ok is True
    assert metrics.counts["replayed"] == 15 and "written" not in metrics.counts


def test_an_idle_writer_keeps_its_database_gauge_true(tmp_path):
    """Without segments to move the writer still pings the database (every PING_SECONDS), so
    `model_service_log_database_up` follows an outage that starts while there is no traffic."""
    metrics = Recorded()
    writer = SegmentWriter(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool", metrics=metrics)
    writer.PING_SECONDS = 0.0
    assert writer.drain() == 0 and writer.db_ok is True
    writer.store = LogStore(DOWN)  # the database goes away, no traffic
    assert writer.drain() == 0 and writer.db_ok is False and "OperationalError" in writer.last_db_error


def _tables(engine) -> bool:
    from sqlalchemy import inspect

    return inspect(engine).has_table("predictions")


def test_close_hands_every_segment_to_the_writer(tmp_path):
    log = PredictionLog(DOWN, tmp_path / "spool").start()
    for _ in range(4):
        _submit(log, 5)
    assert log.spooled_files() == []  # the current segment is this worker's: not the writer's yet
    log.close(timeout=20)
    writer = SegmentWriter(DOWN, tmp_path / "spool")
    assert _records_in(writer.closed()) == 20  # closed (flock dropped), kept, movable


def test_segments_are_retired_by_size_and_deleted_once_stored(tmp_path):
    """Segments do not pile up: retired past their size, deleted by the writer once stored."""
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool", segment_seconds=60)
    log.spool.segment_bytes = 2000  # a few requests a segment
    log.start()
    for _ in range(30):
        _submit(log, 3)
    assert len(log.spooled_files()) >= 2  # retired ones, waiting for the writer
    metrics = Recorded()
    writer = SegmentWriter(log.url, tmp_path / "spool", metrics=metrics)
    writer._back_at_ns = 0  # every segment is new to it: written, not replayed
    moved = writer.drain()
    assert moved == 90 - log.queued() and metrics.counts["written"] == moved
    assert len(list(log.spool_dir.glob("*.jsonl"))) == 1  # the current one
    log.close()
    assert writer.drain() == 90 - moved
    assert _count(log.engine) == 90 and list(log.spool_dir.iterdir()) == []


def test_a_quiet_workers_segment_is_retired_by_age(tmp_path):
    """LOG_SEGMENT_SECONDS: the background thread retires an old segment without traffic, so the last
    records of a burst reach the writer within about that time."""
    log = PredictionLog(DOWN, tmp_path / "spool", segment_seconds=0.1).start()
    _submit(log, 2)
    assert log.queued() == 2
    deadline = time.monotonic() + 10
    while log.queued() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.queued() == 0 and _records_in(log.spooled_files()) == 2
    _submit(log, 1)  # a new segment
    assert log.queued() == 1
    log.close(timeout=5)
    assert not log._thread.is_alive()


def test_an_idle_worker_keeps_its_backlog_gauges_current(tmp_path):
    """The spool's backlog is measured by the background thread too, not only on a request: once the
    writer has moved what waited, an idle worker's gauges fall back to 0 (livemax over the workers would
    otherwise keep its last busy value, and PredictionLogBehind would fire on an idle service)."""
    seen: list[tuple[int, float]] = []

    class Gauges:
        def backlog(self, waiting, age):
            seen.append((waiting, age))

        def __getattr__(self, _name):
            return lambda *a, **k: None

    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(
        url, tmp_path / "spool", segment_seconds=0.1, metrics=Gauges(), max_backlog_bytes=10**9
    )
    log.start()
    try:
        _submit(log, 3)
        deadline = time.monotonic() + 10
        while not any(w > 0 for w, _ in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(w > 0 for w, _ in seen), "the retired segment was measured without a request"
        assert log.flush(10)  # the writer moves it; no request after this
        since = len(seen)
        deadline = time.monotonic() + 10
        while not (len(seen) > since and seen[-1] == (0, 0.0)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[-1] == (0, 0.0), seen[-5:]
    finally:
        log.close(timeout=5)


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
    request returned (bounding what a power loss can take)."""
    done = threading.Event()
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (real(fd), done.set()))
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, tmp_path / "spool", fsync=False, sync_seconds=0.01, segment_seconds=60).start()
    _submit(log, 2)
    assert done.wait(30), "no background sync"
    seg = log.spool._open[0]
    assert seg.synced >= 1
    log.close(timeout=10)
    assert log._thread is not None and not log._thread.is_alive()


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
def test_a_killed_worker_loses_no_accepted_record(tmp_path, fsync):
    """A worker SIGKILLed right after accepting (its segment open, flock held) leaves its segment; the
    writer moves it exactly once. Without fsync too: the kernel keeps what a killed process wrote."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker about to be killed
        os.close(read)
        victim = PredictionLog(url, tmp_path / "spool", fsync=fsync, segment_seconds=60)
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
    writer = SegmentWriter(url, tmp_path / "spool")
    assert writer.drain() == 15 and writer.waiting() == []
    assert _stored(writer.store.engine) == dict.fromkeys(accepted, 3)


def _stored(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id)
        ).all()
    return dict(rows)


def _spool_requests(tmp_path, url: str, requests: int, segment_bytes: int = 3000) -> dict[str, int]:
    """A worker's closed segments holding `requests` 3-record requests: {request id: 3}."""
    log = PredictionLog(url, tmp_path / "spool", fsync=False, segment_seconds=60)
    log.spool.segment_bytes = segment_bytes
    accepted = {_submit(log, 3): 3 for _ in range(requests)}
    log.close()
    return accepted


def test_a_writer_killed_between_its_commit_and_the_unlink_stores_nothing_twice(tmp_path):
    """The window that matters for exactly once: rows committed, file not yet deleted. The next writer
    inserts the file again and every row is skipped."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    accepted = _spool_requests(tmp_path, url, 20, segment_bytes=1000)
    files = SegmentWriter(url, tmp_path / "spool").closed()
    assert len(files) >= 3
    pid = os.fork()
    if pid == 0:  # commit the first segment, die before unlinking it
        try:
            from pathlib import Path

            Path.unlink = lambda *_a, **_k: os.kill(os.getpid(), signal.SIGKILL)
            SegmentWriter(url, tmp_path / "spool").drain()
        finally:
            os._exit(3)  # not reached: the kill comes first
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    first = files[0]
    assert first.exists() and 0 < sum(_stored(make_engine(url)).values()) == _records_in([first])
    writer = SegmentWriter(url, tmp_path / "spool")
    assert writer.drain() == 60  # every row read again, the first segment's skipped by the insert
    assert _stored(writer.store.engine) == accepted and writer.waiting() == []


def test_a_writer_killed_at_random_points_stores_every_record_once(tmp_path):
    """Ten writers SIGKILLed after a random 1-30 ms (mid-read, mid-insert, between commit and
    unlink, whatever it was doing), a last one finishing: every record stored once, no file left."""
    import random

    url = f"sqlite:///{tmp_path / 'p.db'}"
    accepted = _spool_requests(tmp_path, url, 1500, segment_bytes=4000)
    # the tables exist before (as at a service start: the workers create them); a first migration on
    # SQLite killed half-way leaves 'table predictions already exists' behind: a separate issue
    LogStore(url).ensure_tables()
    segments = len(SegmentWriter(url, tmp_path / "spool").closed())
    rng = random.Random(26)
    killed_with_files_left = 0
    for _ in range(10):
        pid = os.fork()
        if pid == 0:
            try:
                writer = SegmentWriter(url, tmp_path / "spool")
                writer.drain()
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.001, 0.03))  # a whole drain takes longer: most kills land mid-way
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        killed_with_files_left += bool(SegmentWriter(url, tmp_path / "spool").waiting())
    assert killed_with_files_left >= 3, "the kills came too late to test anything"
    writer = SegmentWriter(url, tmp_path / "spool")
    writer.drain()
    assert writer.waiting() == [] and not list((writer.spool.dir).glob("*.jsonl"))
    stored = _stored(writer.store.engine)
    print(f"{segments} segments, {sum(accepted.values())} records; {killed_with_files_left} kills mid-way")
    assert stored == accepted


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


def test_an_event_time_round_trips_through_the_spool_and_is_only_written_when_given():
    item = sample_item()
    assert '"event_at"' not in item_to_json(item)  # no event time given: the line is as before
    assert {r[-1] for r in rows_from_line(item_to_json(item))} == {item.created_at}
    item.event_at = datetime(2026, 9, 1, 6, 30, tzinfo=UTC)
    rows = rows_from_line(item_to_json(item))
    assert rows == item.rows() and {r[COLUMNS.index("event_at")] for r in rows} == {item.event_at}
    assert {r[COLUMNS.index("created_at")] for r in rows} == {item.created_at}
    assert [row_from_json(row_to_json(r)) for r in rows] == rows


def test_spool_lines_written_before_event_times_replay_with_created_at(tmp_path):
    """Segments left by a service older than the event time (request lines and row lines without
    `event_at`) are moved into the database; their records' event time is their created_at."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    log = PredictionLog(url, tmp_path / "spool")
    created = datetime(2026, 11, 30, 23, 59, 1, 250_000, tzinfo=UTC)
    at = created.isoformat()
    request_line = json.dumps(
        {
            "request_id": "r-old",
            "created_at": at,
            "model_name": "m",
            "model_version": "1",
            "latency_ms": 2.0,
            "records": [{"a": 1}, {"a": 2}],
            "scores": [0.1, 0.9],
            "labels": [0, 1],
        }
    )
    row_line = json.dumps(
        {
            "request_id": "r-row",
            "record_index": 0,
            "created_at": at,
            "model_name": "m",
            "model_version": "1",
            "features": {"a": 3},
            "score": 0.5,
            "label": 1,
            "latency_ms": 1.0,
        }
    )
    log.spool_dir.mkdir(parents=True)
    (log.spool_dir / "spool-1-1.jsonl").write_text(request_line + "\n" + row_line + "\n")
    assert log.flush(10)
    assert not list(log.spool_dir.glob("*.jsonl"))
    with log.engine.connect() as conn:
        stored = conn.execute(
            select(predictions.c.request_id, predictions.c.created_at, predictions.c.event_at).order_by(
                predictions.c.id
            )
        ).all()
    naive = created.replace(tzinfo=None)  # SQLite returns UTC as naive datetimes
    assert stored == [("r-old", naive, naive), ("r-old", naive, naive), ("r-row", naive, naive)]
    log.close(timeout=5)
