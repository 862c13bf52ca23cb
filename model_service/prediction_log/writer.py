"""The serving worker's side of the prediction log: durable acceptance, the database out of the process.

`PredictionLog.submit` appends a request's records to this worker's spool segment (and with
LOG_SYNC=fsync waits for them to be on disk: group commit, fdatasync calls shared by the concurrent
requests of the worker) before it returns, so a 200 means the records survive a killed worker. That is
all the request does: the worker never writes predictions to the database. It retires its segment
when the segment is large (SEGMENT_BYTES) or older than LOG_SEGMENT_SECONDS (at an append, or from a
background thread when the worker is quiet), and when it stops (`close()`, from `shutdown_all`); a
retired segment is closed (its `flock` dropped) and the writer process
(`model_service.prediction_log.writer_process`, started by model_service/server.py) moves it into the
database and deletes it. So records reach the database about LOG_SEGMENT_SECONDS after their 200.

How durable "on disk" is depends on `fsync` (LOG_SYNC): with `fsync` each request's line is
`fdatasync`ed before `submit` returns (it survives a power loss); with `write` (the default) the line is
in the kernel's page cache when `submit` returns, which a killed process cannot lose, and the background
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

`flush()` hands this worker's segment over and moves every closed segment into the database in the
calling thread (a `SegmentWriter` pass): for an app run without the server (tests, scripts).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from model_service.prediction_log.spool import Spool, item_to_json, spool_dir_for
from model_service.prediction_log.store import Item, LogStore
from model_service.prediction_log.writer_process import SegmentWriter, ping_error

log = logging.getLogger("model_service.prediction_log")


class LogUnavailable(Exception):
    """The records could not be made durable (the spool cannot be written): do not accept them."""


class LogBacklogged(LogUnavailable):
    """The spool holds more than its bound waiting for the database (SPOOL_MAX_BYTES or
    SPOOL_MAX_AGE_SECONDS): accept nothing more until the database has caught up."""


class _NoMetrics:
    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *a, **k: None


class PredictionLog:
    PROBE_SECONDS = 2.0  # after a failed write: how often `unwritable` tries a probe write
    PROBE_BYTES = 64 * 1024
    BACKLOG_CHECK_SECONDS = 0.25  # how often the spool's backlog is measured against its bounds

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        *,
        segment_seconds: float = 0.5,
        metrics: Any = None,
        engine: Engine | None = None,
        fsync: bool = True,
        sync_seconds: float = 0.0,
        min_free_bytes: int = 0,
        max_backlog_bytes: int = 0,
        max_backlog_seconds: float = 0.0,
    ):
        self.url = url
        self.spool_root = Path(spool_dir)
        self.store = LogStore(url, engine)
        self.metrics = metrics or _NoMetrics()
        self.spool = Spool(
            spool_dir_for(spool_dir, url), self.metrics, fsync=fsync, segment_seconds=segment_seconds
        )
        self.sync_seconds = sync_seconds  # LOG_SYNC=write: background fdatasync interval (0: none)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._writer: SegmentWriter | None = None  # `flush`'s, made on first use
        self._flush_lock = threading.Lock()
        self.last_db_error: str | None = None
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
        """The spool folder, the tables (if the database answers), and the background thread that
        retires an old segment and (LOG_SYNC=write) syncs the spool."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.ensure_tables()
        self._thread = threading.Thread(target=self._background, name="prediction-log-spool", daemon=True)
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
        event_at: datetime | None = None,
    ) -> None:
        """Make a request's records durable (spool segment; fdatasync with LOG_SYNC=fsync): the writer
        process moves them into the database. `event_at`: the records' business time (UTC; None: the
        same as `created_at`). Raises `LogUnavailable` when they cannot be written to disk
        (`LogBacklogged` past the spool's bound)."""
        n = len(records)
        behind = self.backlogged()
        if behind is not None:
            self.metrics.refused(n)
            raise LogBacklogged(behind)
        if len(scores) != n or len(labels) != n:
            raise ValueError(f"{n} records but {len(scores)} scores and {len(labels)} labels")
        item = Item(
            request_id, created_at, model_name, model_version, records, scores, labels, latency_ms, event_at
        )
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

    def flush(self, timeout: float = 10.0) -> bool:
        """Hand this worker's current segment to the writer and move every closed segment into the
        database now, in this thread (for an app run without the server's writer process: tests,
        scripts); True when no closed segment is left (within `timeout`), False while the database is down."""
        self.spool.retire_current()
        with self._flush_lock:
            if self._writer is None:
                self._writer = SegmentWriter(self.url, self.spool_root, engine=self.store.engine)
            writer = self._writer
            end = time.monotonic() + timeout
            while True:
                writer.drain(retry_now=True)
                if writer.db_ok is False:
                    self.last_db_error = writer.last_db_error
                    return False
                if not writer.closed():
                    return True
                if time.monotonic() >= end:
                    return False
                time.sleep(0.05)

    def close(self, timeout: float = 20.0) -> None:
        """Retire this worker's segments (the writer process moves them) and stop the background thread;
        with LOG_SYNC=write they are synced first."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.spool.fsync:
            self.spool.sync_written()
        self.spool.close()

    def queued(self) -> int:
        """Records in this worker's current segment, not yet handed to the writer."""
        return self.spool.queued()

    def spooled_files(self) -> list[Path]:
        """Segments waiting for the writer (this process's open segments excluded)."""
        return self.spool.files()

    def ping(self) -> bool:
        error = ping_error(self.store)
        self.last_db_error = error or self.last_db_error
        return error is None

    def ensure_tables(self) -> bool:
        """Create the tables if needed; False when the database is unreachable."""
        try:
            self.store.ensure_tables()
        except SQLAlchemyError as exc:
            self.last_db_error = _one_line(exc)
        return self.store.tables_ready

    def store_from_spool(self, request_id: str, record_index: int) -> bool:
        """Insert a record found in a spool segment (this worker's, another's, one waiting for the writer)
        into the database now (skipped if it is there already: the writer's insert skips it in turn);
        False when no segment holds it. Database errors propagate."""
        row = self.spool.find(request_id, record_index)
        if row is None:
            return False
        if not self.ensure_tables():
            raise SQLAlchemyError(self.last_db_error or "cannot create tables")
        self.store.insert([row])
        return True

    # ---- background: retire an old segment, sync (LOG_SYNC=write)
    def _background(self) -> None:
        segment_seconds = self.spool.segment_seconds
        tick = min(1.0, max(0.02, segment_seconds / 4)) if segment_seconds > 0 else 1.0
        syncing = not self.spool.fsync and self.sync_seconds > 0
        next_sync = time.monotonic() + self.sync_seconds
        while not self._stop.wait(tick):
            if segment_seconds > 0:
                self.spool.retire_old()
            # the backlog gauges (livemax over the workers) and the backpressure verdict stay current while
            # no request comes: an idle worker would otherwise keep the last busy value for ever
            self.backlogged()
            if syncing and time.monotonic() >= next_sync:
                next_sync = time.monotonic() + self.sync_seconds
                self.spool.sync_written()


def _errno_text(exc: OSError) -> str:
    """An OSError without its file name: `ENOSPC: No space left on device`."""
    name = errno.errorcode.get(exc.errno or 0)
    return f"{name}: {exc.strerror}" if name and exc.strerror else type(exc).__name__


def _one_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]
