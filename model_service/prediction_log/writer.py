"""The writer: durable acceptance, with the database off the request path.

`PredictionLog.submit` appends a request's records to this worker's spool segment (and with
LOG_SYNC=fsync waits for them to be on disk: group commit, fdatasync calls shared by the concurrent
requests of the worker) before it returns, so a 200 means the records survive a killed worker. It then queues them (a deque append), and
a background thread writes them in batches (`LOG_BATCH_SIZE`, at least every `LOG_FLUSH_SECONDS`)
through the `LogStore` (inserts that skip duplicates). The in-memory queue is bounded (`LOG_QUEUE_SIZE`
records); past it records are only in the spool (replayed later). While the database is unreachable,
batches stay in the spool; the writer retries the database every couple of seconds and, once it
answers, replays every closed segment (its own and those left by earlier or killed processes).
`close()` (`shutdown_all` when a worker stops on SIGTERM, and atexit) drains the queue to the database; what
the database cannot take stays in the spool.

How durable "on disk" is depends on `fsync` (LOG_SYNC): with `fsync` each request's line is
`fdatasync`ed before `submit` returns (it survives a power loss); with `write` (the default) the line is
in the kernel's page cache when `submit` returns, which a killed process cannot lose, and a background
thread `fdatasync`s the segments every `sync_seconds` (LOG_SYNC_SECONDS; 0: never), so a power loss or
kernel crash can take only the lines written since its last sync. When the spool cannot be written, `submit` raises
`LogUnavailable` (the request is answered 503: nothing is accepted that is not on disk).

Backpressure: with SPOOL_MAX_BYTES or SPOOL_MAX_AGE_SECONDS set, `submit` raises `LogBacklogged` (503
with Retry-After and the reason) while more bytes than the bound, or records older than it, wait in the
spool for the database (`backlogged`, measured at most every BACKLOG_CHECK_SECONDS): the spool never grows
without bound while the service keeps answering 200, and a 200 always means stored on disk.

`unwritable()` says why the log cannot take records now (None when it can), for `/ready`: the last
spool write failed and none has succeeded since (re-checked at most every `PROBE_SECONDS` by writing a
`PROBE_BYTES` probe file in the spool folder, so that a worker taken out of a load balancer can become
ready again without traffic), or the spool's filesystem has less than `min_free_bytes` free
(LOG_MIN_FREE_BYTES).
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from model_service.prediction_log.spool import Segment, Spool, item_to_json, spool_dir_for
from model_service.prediction_log.store import Item, LogStore, Row

log = logging.getLogger("model_service.prediction_log")


class LogUnavailable(Exception):
    """The records could not be made durable (the spool cannot be written): do not accept them."""


class LogBacklogged(LogUnavailable):
    """The spool holds more than its bound waiting for the database (SPOOL_MAX_BYTES or
    SPOOL_MAX_AGE_SECONDS): accept nothing more until the database has caught up."""


class _NoMetrics:
    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *a, **k: None


@dataclass
class _Entry:
    """One request's rows, durable in `segment`, waiting for the database."""

    request_id: str
    rows: list[Row]
    segment: Segment


class PredictionLog:
    RETRY_SECONDS = 2.0
    REPLAY_CHECK_SECONDS = 2.0
    PROBE_SECONDS = 2.0  # after a failed write: how often `unwritable` tries a probe write
    PROBE_BYTES = 64 * 1024
    BACKLOG_CHECK_SECONDS = 0.25  # how often the spool's backlog is measured against its bounds

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
        fsync: bool = True,
        sync_seconds: float = 0.0,
        min_free_bytes: int = 0,
        max_backlog_bytes: int = 0,
        max_backlog_seconds: float = 0.0,
    ):
        self.url = url
        self.store = LogStore(url, engine)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.metrics = metrics or _NoMetrics()
        self.spool = Spool(spool_dir_for(spool_dir, url), self.metrics, fsync=fsync)
        self.sync_seconds = sync_seconds  # LOG_SYNC=write: background fdatasync interval (0: none)
        self._sync_stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._items: collections.deque[_Entry] = collections.deque()
        self._queued = 0  # records in _items
        self._pending: collections.Counter[str] = (
            collections.Counter()
        )  # request id -> records not yet written
        self._cond = threading.Condition()
        self._stop = False
        self._flush_requested = 0
        self._flushed = 0
        self.db_ok = True
        self.last_db_error: str | None = None
        self._next_retry = 0.0
        self._next_replay_check = 0.0
        self._thread: threading.Thread | None = None
        self.min_free_bytes = min_free_bytes  # LOG_MIN_FREE_BYTES: less free on the spool's disk: not ready
        self.write_error: str | None = None  # why the last spool write failed; None once one succeeds
        self._next_probe = 0.0
        # backpressure (SPOOL_MAX_BYTES, SPOOL_MAX_AGE_SECONDS; 0: no bound): measured at most every
        # BACKLOG_CHECK_SECONDS, since it lists the spool folder
        self.max_backlog_bytes = max_backlog_bytes
        self.max_backlog_seconds = max_backlog_seconds
        self._backlog_reason: str | None = None
        self._next_backlog_check = 0.0
        self._backlog_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        return self.store.engine

    @property
    def spool_dir(self) -> Path:
        return self.spool.dir

    # ---- public API
    def start(self) -> PredictionLog:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.ensure_tables()
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()
        if not self.spool.fsync and self.sync_seconds > 0:
            self._sync_thread = threading.Thread(
                target=self._sync_loop, name="prediction-log-sync", daemon=True
            )
            self._sync_thread.start()
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
        """Make a request's records durable (spool segment, fdatasync), then queue them for the database.
        Raises `LogUnavailable` when they cannot be written to disk."""
        behind = self.backlogged()
        if behind is not None:
            self.metrics.refused(len(records))
            raise LogBacklogged(behind)
        item = Item(request_id, created_at, model_name, model_version, records, scores, labels, latency_ms)
        rows = item.rows()
        n = len(rows)
        try:
            segment, seq = self.spool.append(item_to_json(item), n)
            self.spool.sync(segment, seq)
        except OSError as exc:
            self.metrics.dropped(n)
            self.write_error = f"spool write failed ({_errno_text(exc)})"
            log.error("prediction log: REFUSED %d records (spool write failed: %s)", n, exc)
            raise LogUnavailable(f"the prediction log cannot be written: {exc}") from exc
        if self.write_error is not None:
            self.write_error = None
            log.info("prediction log: the spool is written again")
        with self._cond:
            if self._queued + n <= self.queue_size and not self._stop:
                self._items.append(_Entry(request_id, rows, segment))
                self._queued += n
                self._pending[request_id] += n
                self.metrics.queue_depth(self._queued)
                if self._queued >= self.batch_size:
                    self._cond.notify()
                return
        # queue full (or shutting down): the records stay in the spool (replayed later), nothing lost
        self.spool.settle(segment, n, stored=False)
        self.metrics.spooled(n)

    def backlogged(self) -> str | None:
        """Why nothing more is accepted while the database catches up (None: below the bounds). The
        spool's backlog is measured at most every BACKLOG_CHECK_SECONDS (and published as metrics)."""
        if not (self.max_backlog_bytes or self.max_backlog_seconds):
            return None
        now = time.monotonic()
        if now >= self._next_backlog_check and self._backlog_lock.acquire(blocking=False):
            try:
                self._next_backlog_check = now + self.BACKLOG_CHECK_SECONDS
                waiting, age = self.spool.backlog()
                self.metrics.backlog(waiting, age or 0.0)
                reason = None
                if self.max_backlog_bytes and waiting > self.max_backlog_bytes:
                    reason = (
                        f"the prediction log is behind: {waiting} bytes wait in the spool for the database, "
                        f"more than SPOOL_MAX_BYTES ({self.max_backlog_bytes}); retry later"
                    )
                elif self.max_backlog_seconds and age is not None and age > self.max_backlog_seconds:
                    reason = (
                        f"the prediction log is behind: records have waited {age:.0f} s in the spool for the "
                        f"database, more than SPOOL_MAX_AGE_SECONDS ({self.max_backlog_seconds:g}); retry later"
                    )
                if reason != self._backlog_reason:
                    if reason:
                        log.warning("prediction log: REFUSING new records: %s", reason)
                    else:
                        log.info("prediction log: the database caught up; accepting records again")
                self._backlog_reason = reason
            finally:
                self._backlog_lock.release()
        return self._backlog_reason

    def unwritable(self) -> tuple[str, str] | None:
        """Why records cannot be accepted now, as (`unwritable`, `backlogged` or `nearly_full`, the reason), or None
        when they can: for `/ready`. The reason names no path."""
        if self.write_error is not None and time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + self.PROBE_SECONDS
            if self._probe():
                self.write_error = None
                log.info("prediction log: the spool folder can be written again (probe)")
        if self.write_error is not None:
            return "unwritable", f"the prediction log cannot be written: {self.write_error}"
        behind = self.backlogged()
        if behind is not None:
            return "backlogged", behind
        if self.min_free_bytes > 0:
            free = self.spool.free_bytes()
            if free is not None and free < self.min_free_bytes:
                return (
                    "nearly_full",
                    f"the prediction log's disk is nearly full: {free} bytes free, "
                    f"less than LOG_MIN_FREE_BYTES ({self.min_free_bytes})",
                )
        return None

    def _probe(self) -> bool:
        """Write (then remove) a PROBE_BYTES file in the spool folder: True when it was written whole."""
        path = self.spool_dir / f".probe-{os.getpid()}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            view = memoryview(bytes(self.PROBE_BYTES))
            while view:
                view = view[os.write(fd, view) :]
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

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
        """Drain the queue to the database (what it cannot take stays in the spool) and stop the writer."""
        with self._cond:
            if self._stop:
                return
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:  # anything the writer did not get to: it is in the spool already
            leftover = list(self._items)
            self._items.clear()
            self._queued = 0
        self._settle(leftover, stored=False)
        self._sync_stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout)
        if not self.spool.fsync:
            self.spool.sync_written()  # what stays in the spool (database down) is on disk too
        self.spool.close()
        self.metrics.queue_depth(0)

    def queued(self) -> int:
        with self._cond:
            return self._queued

    def spooled_files(self) -> list[Path]:
        """Segments waiting for replay (this process's open segments excluded)."""
        return self.spool.files()

    def ping(self) -> bool:
        try:
            self.store.ping()
            return True
        except SQLAlchemyError as exc:
            self.last_db_error = _one_line(exc)
            return False

    def ensure_tables(self) -> bool:
        """Create the tables if needed; False (and the database marked down) when it is unreachable."""
        try:
            self.store.ensure_tables()
        except SQLAlchemyError as exc:
            self._db_state(False, exc)
        return self.store.tables_ready

    def store_from_spool(self, request_id: str, record_index: int) -> bool:
        """Insert a record found in a spool segment (this worker's or another's) into the database now
        (skipped if it is there already); False when no segment holds it. Database errors propagate."""
        row = self.spool.find(request_id, record_index)
        if row is None:
            return False
        self._insert([row])
        return True

    # ---- background sync (LOG_SYNC=write)
    def _sync_loop(self) -> None:
        while not self._sync_stop.wait(self.sync_seconds):
            self.spool.sync_written()

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
                self._write([r for e in batch for r in e.rows], batch)
            if self._queued_snapshot() == 0:
                with self._cond:
                    if self._flushed < flush_target:
                        self._flushed = flush_target
                        self._cond.notify_all()
                if stopping:
                    return
                self._maybe_replay()
            elif stopping and not self.db_ok and time.monotonic() < self._next_retry:
                # database down at shutdown: leave the rest in the spool without waiting for it
                with self._cond:
                    rest = self._take(10**12)
                self._settle(rest, stored=False)
                self.metrics.spooled(sum(len(e.rows) for e in rest))

    def _queued_snapshot(self) -> int:
        with self._cond:
            return self._queued

    def _take(self, limit: int) -> list[_Entry]:
        out, n = [], 0
        while self._items and n < limit:
            entry = self._items.popleft()
            out.append(entry)
            n += len(entry.rows)
        self._queued -= n
        self.metrics.queue_depth(self._queued)
        return out

    def _settle(self, entries: list[_Entry], stored: bool) -> None:
        for e in entries:
            self.spool.settle(e.segment, len(e.rows), stored)
        with self._cond:
            for e in entries:
                self._pending[e.request_id] -= len(e.rows)
                if self._pending[e.request_id] <= 0:
                    del self._pending[e.request_id]

    def _write(self, rows: list[Row], entries: list[_Entry]) -> None:
        if self.db_ok or time.monotonic() >= self._next_retry:
            try:
                self._insert(rows)
                self.metrics.written(len(rows))
                self._db_state(True)
                self._settle(entries, stored=True)
                return
            except SQLAlchemyError as exc:
                self._db_state(False, exc)
        log.warning("prediction log: %d records kept in the spool (database unavailable)", len(rows))
        self.metrics.spooled(len(rows))
        self._settle(entries, stored=False)

    def _db_state(self, ok: bool, exc: Exception | None = None) -> None:
        if ok and not self.db_ok:
            log.info("prediction log: database reachable again")
            self._next_replay_check = 0.0  # replay at once
        if not ok:
            self._next_retry = time.monotonic() + self.RETRY_SECONDS
            self.last_db_error = _one_line(exc) if exc else "unreachable"
            if self.db_ok:
                log.error(
                    "prediction log: database unavailable, records kept in the spool %s: %s",
                    self.spool_dir,
                    self.last_db_error,
                )
        self.db_ok = ok
        self.metrics.db_up(ok)

    def _insert(self, rows: list[Row]) -> None:
        if not self.ensure_tables():
            raise SQLAlchemyError(self.last_db_error or "cannot create tables")
        self.store.insert(rows)

    # ---- replay of the spool
    def _maybe_replay(self) -> None:
        now = time.monotonic()
        if now < self._next_replay_check:
            return
        self._next_replay_check = now + self.REPLAY_CHECK_SECONDS
        if not self.db_ok:
            if now < self._next_retry:
                return
            if not self.ping():
                self._db_state(False, SQLAlchemyError(self.last_db_error or "unreachable"))
                return
        dirty = self.spool.retire_dirty()  # our own records the database missed become replayable
        files = self.spooled_files()
        if not files:
            return
        if dirty:
            self._next_replay_check = 0.0
        for path in files:
            try:
                replayed = self.spool.replay_file(path, self._insert, self.batch_size)
            except SQLAlchemyError as exc:
                self._db_state(False, exc)
                return
            if replayed is None:
                continue  # gone, or another process holds it
            self._db_state(True)
            self.metrics.replayed(replayed)
            log.info("prediction log: replayed %d spooled records from %s", replayed, path.name)


def _errno_text(exc: OSError) -> str:
    """An OSError without its file name: `ENOSPC: No space left on device`."""
    name = errno.errorcode.get(exc.errno or 0)
    return f"{name}: {exc.strerror}" if name and exc.strerror else type(exc).__name__


def _one_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]
