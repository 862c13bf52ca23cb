"""The spool: prediction rows kept on local disk while the database is unreachable.

Rows are appended (and fsynced) as JSON lines to a segment file under `SPOOL_DIR/<hash of DATABASE_URL>/`.
A segment being written is held with an exclusive `flock` (it becomes visible as `*.jsonl` only once
locked), so two workers never replay the same file and none replays a file still in use. Replaying a
segment inserts all of it (the inserts skip rows already there: exactly once even after a crash
mid-replay) before the file is deleted; torn lines from a crash are counted in a `.corrupt` note and
kept out. A row is only reported dropped when the spool file cannot be written either.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from model_service import jsonfast
from model_service.prediction_log.store import COLUMNS, Row

log = logging.getLogger("model_service.prediction_log")


def row_to_json(row: Row) -> str:
    """A spool line: the row as a JSON object keyed by column (the format older spool files have too)."""
    data = dict(zip(COLUMNS, row, strict=True))
    data["created_at"] = data["created_at"].isoformat()
    return jsonfast.dumps(data)


def row_from_json(line: str) -> Row:
    data = jsonfast.loads(line)
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    return tuple(data[c] for c in COLUMNS)


def spool_dir_for(root: Path, url: str) -> Path:
    """One folder per database: a spool is only ever replayed into the database it was meant for."""
    return Path(root) / hashlib.sha256(url.encode()).hexdigest()[:12]


class Spool:
    """Segment files of one database's spooled rows: write, list, replay."""

    def __init__(self, directory: Path, metrics: Any):
        self.dir = Path(directory)
        self.metrics = metrics
        self._lock = threading.Lock()
        self._segment: IO[str] | None = None  # open segment (holding an flock)

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.jsonl")) if self.dir.is_dir() else []

    def write(self, rows: list[Row], reason: str) -> None:
        """Append rows to the current segment and fsync it; counted as dropped only if that fails."""
        if not rows:
            return
        data = "".join(row_to_json(r) + "\n" for r in rows)
        with self._lock:
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

    def _open_segment(self) -> IO[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = f"spool-{os.getpid()}-{time.time_ns()}"
        tmp = self.dir / f"{stem}.open"
        f = open(tmp, "a", encoding="utf-8")  # noqa: SIM115 - held open while it is the current segment
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        os.replace(tmp, self.dir / f"{stem}.jsonl")  # visible to replayers only once locked
        return f

    def close_segment(self) -> None:
        """Close the current segment (releases its flock: it becomes replayable)."""
        with self._lock:
            if self._segment is not None:
                self._segment.close()
                self._segment = None

    def replay_file(self, path: Path, insert: Callable[[list[Row]], None], batch_size: int) -> int | None:
        """Insert a closed segment's rows in batches, then delete it: the number of rows replayed, or None
        when the file is gone or locked by another process. Database errors propagate (file kept)."""
        try:
            f = open(path, encoding="utf-8")  # noqa: SIM115
        except FileNotFoundError:
            return None
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return None  # being written or replayed by another process
            if not path.exists():  # replayed and deleted by another process meanwhile
                return None
            rows, bad = [], 0
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(row_from_json(line))
                except (ValueError, KeyError):
                    bad += 1  # a torn last line from a crash: keep it out, keep the rest
            for start in range(0, len(rows), batch_size):
                insert(rows[start : start + batch_size])
            if bad:
                Path(str(path) + ".corrupt").write_text(f"{bad} unreadable lines in {path.name}\n")
                log.error("prediction log: %d unreadable lines in spool file %s", bad, path)
            path.unlink()
        return len(rows)
