"""The writer process: closed spool segments into the database, off the request path.

`python -m model_service.prediction_log.writer_process` (one per host or replica: the spool is local
disk). model_service/server.py starts it beside granian's workers, restarts it when it dies, and stops
it after the workers on SIGTERM, so that it moves what they retired on their way out; a site may run it
as its own service instead (the same settings: DATABASE_URL, SPOOL_DIR, PROMETHEUS_MULTIPROC_DIR to
share the service's metrics folder).

Serving workers only append to their spool segment (durable before the 200) and retire it when it is
large (SEGMENT_BYTES) or old (LOG_SEGMENT_SECONDS). The writer polls the spool folder (every
`POLL_SECONDS` while there is nothing to do) and, oldest first, takes each segment no process holds
(its `flock`: a worker's current segment is held until retired): it reads every whole line, inserts all
its rows in one transaction (`LogStore.insert`: PostgreSQL COPY, SQLite one executemany; rows already
there skipped) and deletes the file only after the commit. Exactly once: a writer killed before the
commit leaves the file and nothing stored; killed between the commit and the unlink, the next one
inserts the file again and every row is skipped.

While the database is unreachable the segments wait (the writer retries every `RETRY_SECONDS`;
`model_service_log_database_up` 0; the workers' backpressure bounds what waits). On SIGTERM (or
SIGINT, or when its parent server dies) it moves what is there, waiting up to GRACEFUL_TIMEOUT for
segments still held by workers that are stopping, and exits; with the database down it exits at once,
leaving the segments for the next start.

Metrics (prometheus multiprocess, in the service's folder): records written (`..._log_written_records`),
replayed (moved after they waited: through a database outage, or left by an earlier writer),
spooled (records whose first write found the database down), `..._log_database_up`, and the spool's
backlog (bytes and age of what waits).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from model_service.prediction_log.spool import Spool, created_ns, held, spool_dir_for
from model_service.prediction_log.store import LogStore, Row

log = logging.getLogger("model_service.prediction_log")

SEGMENT_ROWS = 10**9  # all of a segment's rows in one insert (one transaction)


class _NoMetrics:
    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *a, **k: None


class SegmentWriter:
    """Moves the closed segments of one spool folder (one database) into the database."""

    POLL_SECONDS = 0.1
    RETRY_SECONDS = 2.0
    BACKLOG_SECONDS = 1.0  # how often the backlog gauges are measured
    PING_SECONDS = 5.0  # with nothing to move: how often the database is pinged (for its gauge)

    def __init__(self, url: str, spool_root: Path, *, metrics: Any = None, engine: Engine | None = None):
        self.store = LogStore(url, engine)
        self.metrics = metrics or _NoMetrics()
        self.spool = Spool(spool_dir_for(Path(spool_root), url), self.metrics)
        self.db_ok: bool | None = None  # unknown until the first attempt
        self.last_db_error: str | None = None
        self._next_retry = 0.0
        self._back_at_ns = time.time_ns()  # segments created before this waited: counted as replayed
        self._spooled: set[Path] = set()  # segments whose records were counted as kept for the database
        self._next_backlog = 0.0
        self._next_ping = 0.0

    def waiting(self) -> list[Path]:
        """Every segment on disk, oldest first (held ones too: a worker's current segment)."""
        if not self.spool.dir.is_dir():
            return []
        return sorted(self.spool.dir.glob("*.jsonl"), key=lambda p: (created_ns(p) or 0, p.name))

    def closed(self) -> list[Path]:
        """The segments no process holds (the writer's to move), oldest first."""
        return [p for p in self.waiting() if not held(p)]

    def drain(self, *, retry_now: bool = False) -> int:
        """One pass: move every closed segment, oldest first; the rows moved. Stops at the first database
        error (the segment stays; retried after RETRY_SECONDS, or at once with `retry_now`)."""
        self._measure_backlog()
        if self.db_ok is False and not retry_now and time.monotonic() < self._next_retry:
            return 0
        moved = 0
        for path in self.waiting():
            attempted: list[int] = []

            def insert(rows: list[Row], attempted: list[int] = attempted) -> None:
                attempted.append(len(rows))
                self.store.ensure_tables()
                self.store.insert(rows)

            try:
                n = self.spool.replay_file(path, insert, SEGMENT_ROWS)
            except SQLAlchemyError as exc:
                self._db_state(False, exc)
                if path not in self._spooled:
                    self._spooled.add(path)
                    self.metrics.spooled(sum(attempted))
                return moved
            if n is None:
                continue  # held (a worker still writes it) or gone
            self._db_state(True)
            self._spooled.discard(path)
            created = created_ns(path)
            if created is not None and created < self._back_at_ns:
                self.metrics.replayed(n)
            else:
                self.metrics.written(n)
            moved += n
        now = time.monotonic()
        if not moved and now >= self._next_ping:  # idle: keep `database_up` true to the database
            self._next_ping = now + self.PING_SECONDS
            self._db_state(self._ping())
        elif moved:
            self._next_ping = now + self.PING_SECONDS
        return moved

    def _ping(self) -> bool:
        error = ping_error(self.store)
        self.last_db_error = error or self.last_db_error
        return error is None

    def _measure_backlog(self) -> None:
        now = time.monotonic()
        if now < self._next_backlog:
            return
        self._next_backlog = now + self.BACKLOG_SECONDS
        waiting, age = self.spool.backlog()
        self.metrics.backlog(waiting, age or 0.0)

    def _db_state(self, ok: bool, exc: Exception | None = None) -> None:
        if ok and self.db_ok is False:
            log.info("prediction log writer: database reachable again")
            self._back_at_ns = time.time_ns()
        if not ok:
            self._next_retry = time.monotonic() + self.RETRY_SECONDS
            if exc is not None:
                self.last_db_error = _one_line(exc)
            if self.db_ok is not False:
                log.error(
                    "prediction log writer: database unavailable, records wait in the spool %s: %s",
                    self.spool.dir,
                    self.last_db_error,
                )
        self.db_ok = ok
        self.metrics.db_up(ok)

    def run(self, stop: threading.Event, *, parent: int | None = None, stop_seconds: float = 30.0) -> int:
        """Move segments until `stop` is set (or the parent process is gone), then move what the
        stopping workers retire, within `stop_seconds`. Returns the number of segments left behind."""
        log.info("prediction log writer %d: moving %s into the database", os.getpid(), self.spool.dir)
        while not stop.is_set():
            if parent is not None and os.getppid() != parent:
                log.warning("prediction log writer: the server is gone; moving what is left, then exiting")
                break
            if not self.drain():
                stop.wait(self.POLL_SECONDS)
        deadline = time.monotonic() + stop_seconds
        while True:
            self.drain(retry_now=True)
            left = self.waiting()
            if not left:
                break
            if self.db_ok is False:
                log.error(
                    "prediction log writer: stopping with the database down: %d segments stay in the spool "
                    "(moved at the next start)",
                    len(left),
                )
                break
            if time.monotonic() >= deadline:
                log.error("prediction log writer: %d segments still held after %gs", len(left), stop_seconds)
                break
            time.sleep(self.POLL_SECONDS)
        self.metrics.backlog(0, 0.0)
        log.info("prediction log writer %d stopped", os.getpid())
        return len(self.waiting())


def ping_error(store: LogStore) -> str | None:
    """Why the database does not answer a `SELECT 1` (one line), or None when it does."""
    try:
        store.ping()
    except SQLAlchemyError as exc:
        return _one_line(exc)
    return None


def _one_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]


def main(argv: list[str] | None = None) -> int:
    from core.logs import setup_logging
    from model_service.settings import ServiceSettings, SettingsError

    parser = argparse.ArgumentParser(prog="python -m model_service.prediction_log.writer_process")
    parser.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)  # set by server.py
    parser.add_argument("--once", action="store_true", help="move what is there, then exit")
    args = parser.parse_args(argv)
    try:
        settings = ServiceSettings.from_env()
    except SettingsError as exc:
        print(f"prediction log writer: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    from model_service import metrics as m  # after PROMETHEUS_MULTIPROC_DIR is known (inherited)
    from model_service.heap import settle_heap

    writer = SegmentWriter(settings.database_url, settings.spool_dir, metrics=m.LogMetrics())
    settle_heap()  # the imports and the engine live as long as the process (model_service/heap.py)
    stop = threading.Event()
    if args.once:
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    left = writer.run(stop, parent=args.parent, stop_seconds=float(settings.graceful_timeout))
    return 1 if left and args.once else 0


if __name__ == "__main__":
    sys.exit(main())
