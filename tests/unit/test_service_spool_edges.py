"""The spool's edges (issue 24): a failed or short write never glues or loses a line, replay keeps the good
lines around a torn one, and the log's files (spool, notes, SQLite database) are created 0600."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from model_service.prediction_log.request_ids import new_request_id
from model_service.prediction_log.spool import Spool, item_to_json, parse_line
from model_service.prediction_log.store import Item, LogStore
from model_service.prediction_log.writer import LogBacklogged, LogUnavailable, PredictionLog
from tests.support.service_process import stored_by_request


def _item(n: int = 3) -> Item:
    return Item(
        new_request_id(),
        datetime.now(UTC),
        "m",
        "1",
        [{"x": i, "text": "y" * 200} for i in range(n)],
        np.full(n, 0.25),
        np.zeros(n, dtype=int),
        1.5,
    )


def _line(item: Item) -> bytes:
    return (item_to_json(item) + "\n").encode()


def _replay(path: Path) -> list[tuple]:
    rows: list[tuple] = []
    spool = Spool(path.parent, metrics=None)
    assert spool.replay_file(path, rows.extend, batch_size=2) is not None
    assert not path.exists()
    return rows


def _ids(rows) -> list[tuple[str, int]]:
    return sorted((r[0], r[1]) for r in rows)


def _expected(*items: Item) -> list[tuple[str, int]]:
    return sorted((it.request_id, i) for it in items for i in range(len(it.records)))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------- replay
def test_replay_leaves_out_a_torn_tail_and_keeps_the_lines_before_it(tmp_path):
    good = [_item() for _ in range(3)]
    torn = _line(_item())
    path = tmp_path / "spool-1-1.jsonl"
    path.write_bytes(b"".join(_line(it) for it in good) + torn[: len(torn) // 2])
    assert _ids(_replay(path)) == _expected(*good)
    assert not list(tmp_path.glob("*.corrupt"))  # a torn tail was never acknowledged: nothing lost


def test_replay_of_a_torn_tail_that_parses_leaves_it_out_too(tmp_path):
    """The newline is part of the one write: a line without it was answered 503, never 200."""
    good, unacknowledged = _item(), _item()
    path = tmp_path / "spool-1-1.jsonl"
    path.write_bytes(_line(good) + _line(unacknowledged)[:-1])
    assert _ids(_replay(path)) == _expected(good)


def test_replay_reads_a_whole_line_glued_to_a_torn_one_and_the_lines_after(tmp_path):
    """A segment written before the cut-back: half a line (a failed write), then the next accepted line
    glued to it, then more lines. Only the torn half is left out."""
    first, glued, last = _item(), _item(), _item()
    torn = _line(_item())
    path = tmp_path / "spool-1-1.jsonl"
    path.write_bytes(_line(first) + torn[: len(torn) // 3] + _line(glued) + _line(last))
    assert _ids(_replay(path)) == _expected(first, glued, last)
    assert not list(tmp_path.glob("*.corrupt"))


def test_replay_counts_an_unreadable_middle_line_and_keeps_the_good_lines_around_it(tmp_path):
    first, after1, after2 = _item(), _item(), _item()
    torn = _line(_item())
    path = tmp_path / "spool-1-1.jsonl"
    path.write_bytes(_line(first) + torn[: len(torn) // 2] + b"\n" + _line(after1) + _line(after2))
    assert _ids(_replay(path)) == _expected(first, after1, after2)
    note = tmp_path / "spool-1-1.jsonl.corrupt"
    assert note.read_text() == "1 unreadable lines in spool-1-1.jsonl\n"
    assert _mode(note) == 0o600


def test_parse_line_tells_whole_torn_and_glued_lines_apart():
    item = _item(2)
    whole = item_to_json(item)
    assert (len(parse_line(whole)[0]), parse_line(whole)[1]) == (2, False)
    assert parse_line(whole[:40]) == ([], True)
    rows, torn = parse_line(whole[:40] + whole)
    assert torn and [r[0] for r in rows] == [item.request_id] * 2


# ---------------------------------------------------------------------------- a full disk
class FullDisk:
    """os.write on spool segments: the `fail_at`-th write puts half its bytes on disk and returns short,
    the next raises ENOSPC (what a filling disk does); the writes after succeed (space came back)."""

    def __init__(self, monkeypatch, fail_at: int):
        self.real = os.write
        self.calls = 0
        self.fail_at = fail_at
        self.failing = False
        monkeypatch.setattr(os, "write", self.write)

    def write(self, fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            return self.real(fd, data)
        self.calls += 1
        if self.failing:
            self.failing = False
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.calls == self.fail_at:
            self.failing = True
            return self.real(fd, bytes(data[: len(data) // 2]))
        return self.real(fd, data)


def _submit(plog: PredictionLog, item: Item) -> None:
    plog.submit(
        item.request_id,
        item.created_at,
        item.model_name,
        item.model_version,
        item.records,
        item.scores,
        item.labels,
        item.latency_ms,
    )


def test_a_write_failing_half_way_loses_no_accepted_line(tmp_path, monkeypatch):
    """The finding: half a line left by a failed write, the next accepted line glued to it and lost at
    replay. Every line accepted with success must be replayed exactly once, the refused one never."""
    url = f"sqlite:///{tmp_path / 'service.db'}"
    plog = PredictionLog(url, tmp_path / "spool", fsync=False)  # no writer: everything waits in the spool
    disk = FullDisk(monkeypatch, fail_at=3)
    items = [_item() for _ in range(6)]
    accepted = []
    for item in items:
        try:
            _submit(plog, item)
            accepted.append(item)
        except LogUnavailable:
            assert plog.write_error == "spool write failed (ENOSPC: No space left on device)"
            continue
        assert plog.write_error is None  # a successful write clears it
    assert len(accepted) == 5 and items[2] not in accepted and disk.calls == 7
    plog.close()
    segments = list(plog.spool_dir.glob("*.jsonl"))
    assert len(segments) == 1 and segments[0].read_bytes().endswith(b"\n")
    monkeypatch.undo()
    replayer = PredictionLog(url, tmp_path / "spool")
    assert replayer.ensure_tables()
    for path in replayer.spooled_files():
        replayer.spool.replay_file(path, replayer.store.insert, batch_size=500)
    assert stored_by_request(url) == {it.request_id: 3 for it in accepted}
    assert not list(plog.spool_dir.glob("*")), "replayed and deleted, no .corrupt note"


def test_a_segment_that_cannot_be_cut_back_takes_no_more_lines(tmp_path, monkeypatch):
    spool = Spool(tmp_path, metrics=None, fsync=False)
    FullDisk(monkeypatch, fail_at=2)
    first, refused, after = _item(), _item(), _item()
    spool.append(item_to_json(first), 3)
    monkeypatch.setattr(os, "ftruncate", lambda *_: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError):
        spool.append(item_to_json(refused), 3)
    seg, _ = spool.append(item_to_json(after), 3)  # a new segment: the torn one is retired
    spool.close()
    monkeypatch.undo()
    paths = sorted(tmp_path.glob("*.jsonl"))
    assert len(paths) == 2 and seg.path == paths[1]
    rows = [r for p in paths for r in _replay(p)]
    assert _ids(rows) == _expected(first, after)


# ---------------------------------------------------------------------------- /ready's view of it
def test_unwritable_until_a_write_or_a_probe_succeeds(tmp_path, monkeypatch):
    plog = PredictionLog(f"sqlite:///{tmp_path / 'service.db'}", tmp_path / "spool", fsync=False)
    assert plog.unwritable() is None
    FullDisk(monkeypatch, fail_at=1)
    with pytest.raises(LogUnavailable):
        _submit(plog, _item())
    monkeypatch.setattr(plog, "_probe", lambda: False)  # the disk is still full
    kind, reason = plog.unwritable()
    assert kind == "unwritable" and reason.startswith("the prediction log cannot be written: spool write")
    assert str(tmp_path) not in reason
    _submit(plog, _item())  # space came back: a successful write
    assert plog.unwritable() is None
    FullDisk(monkeypatch, fail_at=1)  # full again
    with pytest.raises(LogUnavailable):
        _submit(plog, _item())
    monkeypatch.undo()
    plog._next_probe = 0.0
    assert plog.unwritable() is None  # the probe wrote: ready again without traffic
    assert not list(plog.spool_dir.glob(".probe-*"))
    plog.min_free_bytes = 1 << 60
    kind, reason = plog.unwritable()
    assert kind == "nearly_full" and "LOG_MIN_FREE_BYTES" in reason
    plog.close()


# ---------------------------------------------------------------------------- file modes
def test_the_log_creates_its_files_0600(tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        url = f"sqlite:///{tmp_path / 'db' / 'service.db'}"
        plog = PredictionLog(url, tmp_path / "spool", fsync=False)
        plog.ensure_tables()
        _submit(plog, _item())
        plog.store.insert(_item().rows())
        with plog.engine.connect() as conn:  # the WAL and its index exist while a connection is open
            conn.exec_driver_sql("SELECT 1")
            files = sorted((tmp_path / "db").iterdir())
            assert {p.name for p in files} >= {
                "service.db",
                "service.db-wal",
                "service.db-shm",
                "service.db.migrate.lock",
            }
            assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
        segments = list(plog.spool_dir.glob("*.jsonl"))
        assert segments and all(_mode(p) == 0o600 for p in segments)
        plog.close()
    finally:
        os.umask(old)


def test_an_existing_database_file_is_left_as_it_is(tmp_path):
    path = tmp_path / "service.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    LogStore(f"sqlite:///{path}")
    assert _mode(path) == 0o640


def test_backlog_counts_every_segment_and_ages_only_those_waiting(tmp_path):
    spool = Spool(tmp_path / "spool", metrics=None, fsync=False)
    seg, _ = spool.append(item_to_json(_item()), 3)
    size = seg.bytes
    assert spool.backlog() == (size, None)  # our current segment: bytes, but nothing waits yet
    spool.retire_current()  # handed to the writer: it waits for the database
    waiting, age = spool.backlog()
    assert waiting == size and age is not None and 0 <= age < 5
    # a segment no process holds (a killed worker's): waits, aged from its name's creation time
    old = tmp_path / "spool" / f"spool-1-{time.time_ns() - 3_600 * 10**9}.jsonl"
    old.write_bytes(b"x" * 100)
    waiting, age = spool.backlog()
    assert waiting == size + 100 and 3_590 < age < 3_700
    # another live worker's current segment (flock held): bytes only, its records may all be stored
    held = tmp_path / "spool" / f"spool-2-{time.time_ns() - 7_200 * 10**9}.jsonl"
    held.write_bytes(b"y" * 50)
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting, age = spool.backlog()
        assert waiting == size + 150 and age < 3_700
    finally:
        os.close(fd)
    assert spool.backlog()[1] > 7_190  # released: it waits too


def test_predictions_are_refused_past_the_backlog_bound_and_accepted_once_under(tmp_path):
    plog = PredictionLog(
        f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "spool", fsync=False, max_backlog_bytes=2_000
    )
    plog.BACKLOG_CHECK_SECONDS = 0.0  # measure at every call
    item = _item()
    plog.spool.append(item_to_json(item), 3)
    plog.spool.retire_current()
    assert plog.backlogged() is None  # about 1 KB waits: under the bound
    for _ in range(2):
        plog.spool.append(item_to_json(item), 3)
        plog.spool.retire_current()
    with pytest.raises(LogBacklogged, match=r"more than SPOOL_MAX_BYTES \(2000\)"):
        plog.submit(
            new_request_id(), datetime.now(UTC), "m", "1", item.records, item.scores, item.labels, 1.0
        )
    assert plog.unwritable()[0] == "backlogged"
    for path in plog.spool_dir.glob("*.jsonl"):  # the database took them (as a replay would)
        path.unlink()
    assert plog.backlogged() is None and plog.unwritable() is None
