"""The spool: a per-worker write-ahead log of accepted records, on local disk.

Every accepted request is appended as one JSON line (its records, scores and labels) to this worker's
current segment under `SPOOL_DIR/<hash of DATABASE_URL>/` *before* the request is answered. With
LOG_SYNC=write (the default) the written line is in the page cache, which a killed process cannot
lose, and `sync_written` (a background thread of the log, every LOG_SYNC_SECONDS) bounds what a power
loss can take; with LOG_SYNC=fsync it is also made durable (`fdatasync`) before the 200. Concurrent
requests share `fdatasync` calls (group commit: a request waits for a sync in flight that started after
its line was written, else starts its own at once, overlapping the running one; see `Spool.sync`).

A segment being written is held with an exclusive `flock` (it becomes visible as `*.jsonl` only once
locked). A worker *retires* its segment when it grows past `SEGMENT_BYTES` or is older than
`segment_seconds` (LOG_SEGMENT_SECONDS; checked at each append and by the worker's background thread,
so a quiet worker retires too), and when it stops: it closes the file, which drops the `flock`. A
closed segment is the writer process's (`model_service.prediction_log.writer_process`): it inserts all
of it into the database and deletes the file only once those rows are committed. A worker killed by
SIGKILL (or the OOM killer) leaves its segment behind; the kernel drops its `flock`, and the writer
takes it like any other.

Moving a segment inserts all of it (the inserts skip rows already there: exactly once even after a
writer killed between its commit and the unlink, or mid-way) before the file is deleted. A line counts once its newline is written: a write that fails (a full disk) is cut back to
the segment's last whole line (`ftruncate`), so the next line starts clean, and replay leaves out a
torn last line (and, in segments written before that cut-back existed, a torn start glued to the line
after it) without losing the lines around it. Lines that cannot be read at all are counted in a
`.corrupt` note (0600, as the segments) and kept out.
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
from typing import Any

from model_service import jsonfast
from model_service.prediction_log.store import COLUMNS, Item, Row

log = logging.getLogger("model_service.prediction_log")

SEGMENT_BYTES = 1 << 20  # a clean segment is retired (and deleted) past this size


def row_to_json(row: Row) -> str:
    """A spool line: the row as a JSON object keyed by column (the format older spool files have too)."""
    data = dict(zip(COLUMNS, row, strict=True))
    data["created_at"] = data["created_at"].isoformat()
    data["event_at"] = data["event_at"].isoformat()
    return jsonfast.dumps(data)


def _row(data: dict[str, Any]) -> Row:
    """A row line's values (its times parsed); a line written before event times has no `event_at`:
    the record's event time is its created_at, as the service writes it."""
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    event = data.get("event_at")
    data["event_at"] = data["created_at"] if event is None else datetime.fromisoformat(event)
    return tuple(data[c] for c in COLUMNS)


def row_from_json(line: str) -> Row:
    return _row(jsonfast.loads(line))


def item_to_json(item: Item) -> str:
    """A spool line for a whole request (one serialisation per request, not per record). `event_at` is
    written only when the request gave an event time (else it is created_at)."""
    data = {
        "request_id": item.request_id,
        "created_at": item.created_at.isoformat(),
        "model_name": item.model_name,
        "model_version": item.model_version,
        "latency_ms": item.latency_ms,
        "records": item.records,
        "scores": item.scores.tolist(),
        "labels": item.labels.tolist(),
    }
    if item.event_at is not None:
        data["event_at"] = item.event_at.isoformat()
    return jsonfast.dumps(data)


def rows_from_line(line: str) -> list[Row]:
    """The rows of a spool line: a request's line (`records`), or one row's (older spool files). A line
    without `event_at` (no event time given, or written before event times existed) gets created_at."""
    data = jsonfast.loads(line)
    if "records" not in data:
        return [_row(data)]
    created = datetime.fromisoformat(data["created_at"])
    event = data.get("event_at")
    event = created if event is None else datetime.fromisoformat(event)
    records, scores, labels = data["records"], data["scores"], data["labels"]
    if not (len(records) == len(scores) == len(labels)):
        raise ValueError("records, scores and labels differ in length")
    rid, name, version, latency = (
        data["request_id"],
        data["model_name"],
        data["model_version"],
        data["latency_ms"],
    )
    return [
        (rid, i, created, name, version, rec, score, label, latency, event)
        for i, (rec, score, label) in enumerate(zip(records, scores, labels, strict=True))
    ]


LINE_START = '{"request_id":'  # how every spool line begins (request lines and older row lines)


def parse_line(line: str) -> tuple[list[Row], bool]:
    """The rows of a spool line and whether it was torn. A line is acknowledged only once its newline
    is written (one `os.write` of line + newline, cut back when it fails), so bytes without one were
    never answered 200. Segments written before the cut-back could hold such a torn start glued to the
    whole line that followed it: the rows are then read from the first later start that parses."""
    try:
        return rows_from_line(line), False
    except (ValueError, KeyError, TypeError):
        pass
    start = line.find(LINE_START, 1)
    while start > 0:
        try:
            return rows_from_line(line[start:]), True
        except (ValueError, KeyError, TypeError):
            start = line.find(LINE_START, start + 1)
    return [], True


def _private_text(path: Path, text: str) -> None:
    """Write a small file readable by its owner only (0600, as the segments)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def created_ns(path: Path) -> int | None:
    """The creation time a segment's name carries (`spool-<pid>-<time_ns>.jsonl`)."""
    try:
        return int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def held(path: Path) -> bool:
    """Whether a live process holds the segment's flock (it is that process's open segment)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # gone: nothing waits in it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def spool_dir_for(root: Path, url: str) -> Path:
    """One folder per database: a spool is only ever replayed into the database it was meant for."""
    return Path(root) / hashlib.sha256(url.encode()).hexdigest()[:12]


class Segment:
    """One open segment file (flock held) and its bookkeeping (guarded by the spool's condition)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd
        self.bytes = 0
        self.written = 0  # appends made
        self.synced = 0  # appends known durable
        self.sync_started = 0  # appends covered by a sync in flight (or done)
        self.syncing = 0  # syncs in flight
        self.unsynced = 0  # appends whose `sync` has not returned yet (LOG_SYNC=fsync): keep the file open
        self.records = 0  # records appended
        self.opened = time.monotonic()
        self.retired = False  # no more appends; closed (flock dropped: the writer's) once no sync runs


class Spool:
    """Write-ahead segments of one database's records: append + sync, retire, list, find, move."""

    def __init__(
        self,
        directory: Path,
        metrics: Any,
        segment_bytes: int = SEGMENT_BYTES,
        fsync: bool = True,
        segment_seconds: float = 0.0,
    ):
        self.dir = Path(directory)
        self.segment_seconds = segment_seconds  # a segment older than this is retired (0: by size only)
        self.fsync = (
            fsync  # False (LOG_SYNC=write): written to the page cache only, which a killed process keeps
        )
        self.metrics = metrics
        self.segment_bytes = segment_bytes
        self._cond = threading.Condition()
        self._current: Segment | None = None
        self._open: list[Segment] = []  # every segment this process still holds (current and retired)

    # ---- the request path
    def append(self, line: str, records: int) -> tuple[Segment, int]:
        """Append a request's line (`item_to_json`, `records` records) to the current segment; not yet
        durable: `sync` it. Raises OSError."""
        data = (line + "\n").encode()
        with self._cond:
            seg = self._current
            if seg is None:
                seg = self._current = self._open_segment()
                self._open.append(seg)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(seg.fd, view) :]
            except OSError:
                self._cut_back(seg)
                raise
            seg.written += 1
            seg.bytes += len(data)
            seg.records += records
            if self.fsync:
                seg.unsynced += 1  # its `sync` needs the fd: the segment is not closed before
            seq = seg.written
            if seg.bytes >= self.segment_bytes or self._old(seg):
                self._retire(seg)
            return seg, seq

    def sync(self, seg: Segment, seq: int) -> None:
        """Return once append number `seq` of `seg` is on disk. Group commit that overlaps: a request
        waits for a sync in flight only if that sync started after its line was written (so it covers
        it); otherwise it starts its own at once instead of queueing behind the running one. Concurrent
        fdatasync calls on one file share the kernel's journal commit, so overlapping them costs the
        disk little, while serialising them made every request wait for up to two syncs.
        Without `fsync` the write itself is enough: the kernel keeps it when the process dies."""
        if not self.fsync:
            return
        with self._cond:
            try:
                self._sync_locked(seg, seq)
            finally:
                seg.unsynced -= 1
                self._maybe_close(seg)  # retired meanwhile (size or age): closed once its last sync returned

    def _sync_locked(self, seg: Segment, seq: int) -> None:
        """`sync`'s loop, with the condition held (released around each fdatasync)."""
        while seg.synced < seq:
            if seg.sync_started >= seq:  # a sync in flight covers this line: wait for it
                self._cond.wait()
                continue
            target = seg.written
            seg.sync_started, seg.syncing = max(seg.sync_started, target), seg.syncing + 1
            ok = False
            self._cond.release()
            try:
                os.fdatasync(seg.fd)
                ok = True
            finally:
                self._cond.acquire()
                seg.syncing -= 1
                if ok:
                    seg.synced = max(seg.synced, target)
                else:  # the waiters it covered must sync for themselves (and see the error)
                    seg.sync_started = seg.synced
                self._cond.notify_all()

    def sync_written(self) -> int:
        """`fdatasync` every open segment holding appends no sync has covered yet; the number of segments
        synced. LOG_SYNC=write's background sync (`PredictionLog`, every LOG_SYNC_SECONDS): it bounds what
        a power loss can take to the lines written since the last one. A failed sync is logged; the next
        call tries again."""
        with self._cond:
            todo = [(s, s.written) for s in self._open if s.fd >= 0 and s.written > s.sync_started]
            for seg, target in todo:
                seg.syncing += 1
                seg.sync_started = target
        done = 0
        for seg, target in todo:
            ok = False
            try:
                os.fdatasync(seg.fd)
                ok = True
            except OSError as exc:
                log.warning("prediction log: background sync of %s failed: %s", seg.path.name, exc)
            finally:
                with self._cond:
                    seg.syncing -= 1
                    if ok:
                        seg.synced = max(seg.synced, target)
                        done += 1
                    else:
                        seg.sync_started = seg.synced
                    self._cond.notify_all()
                    self._maybe_close(seg)  # it may have been retired meanwhile
        return done

    def _old(self, seg: Segment) -> bool:
        return self.segment_seconds > 0 and time.monotonic() - seg.opened >= self.segment_seconds

    def retire_old(self) -> bool:
        """Retire the current segment if it is older than `segment_seconds` (a worker's background
        thread calls this, so that the records of a quiet worker reach the writer too); True if it was."""
        with self._cond:
            seg = self._current
            if seg is None or not self._old(seg):
                return False
            self._retire(seg)
            return True

    def retire_current(self) -> None:
        """Hand the current segment to the writer now (whatever its size and age)."""
        with self._cond:
            if self._current is not None:
                self._retire(self._current)

    def queued(self) -> int:
        """Records in this process's segments not yet handed to the writer (the current one)."""
        with self._cond:
            return self._current.records if self._current is not None else 0

    def _cut_back(self, seg: Segment) -> None:
        """A failed or short write (a full disk) may have left part of a line: cut the segment back to
        its last whole line, so that the next accepted line starts clean instead of being glued to the
        torn one (and lost with it at replay). If even that fails, the segment takes no more lines (its
        torn tail has no newline: replay leaves it out)."""
        try:
            os.ftruncate(seg.fd, seg.bytes)
        except OSError as exc:
            log.error("prediction log: cannot cut %s back after a failed write: %s", seg.path.name, exc)
            self._retire(seg)

    # ---- segments
    def _open_segment(self) -> Segment:
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = f"spool-{os.getpid()}-{time.time_ns()}"
        tmp = self.dir / f"{stem}.open"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.dir / f"{stem}.jsonl"
        os.replace(tmp, path)  # visible to replayers only once locked
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the file's name survives a machine crash too
        finally:
            os.close(dfd)
        return Segment(path, fd)

    def _retire(self, seg: Segment) -> None:
        seg.retired = True
        if self._current is seg:
            self._current = None
        self._maybe_close(seg)

    def _maybe_close(self, seg: Segment) -> None:
        if not seg.retired or seg.syncing or seg.unsynced or seg.fd < 0:
            return
        os.close(seg.fd)  # releases the flock: the segment is the writer's now (it deletes it once stored)
        seg.fd = -1
        self._open.remove(seg)

    def close(self) -> None:
        """Retire every segment (each is closed once no sync runs on it): the writer takes them all."""
        with self._cond:
            for seg in list(self._open):
                self._retire(seg)

    def free_bytes(self) -> int | None:
        """Bytes free (for an unprivileged writer) on the spool's filesystem; None when unknown."""
        try:
            st = os.statvfs(self.dir if self.dir.is_dir() else self.dir.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def backlog(self) -> tuple[int, float | None]:
        """What waits for the database in this spool folder, for the backpressure bound: (bytes, age in
        seconds of the oldest waiting segment, or None when none waits). Waiting: every segment no process
        holds (retired ones the writer has not stored yet, a killed worker's); a segment still being
        written (this process's, or another live worker's: flock held, at most `segment_bytes` and
        `segment_seconds`) counts in bytes only. A segment's age runs from its creation (its name's time)."""
        with self._cond:
            own = {s.path: False for s in self._open}
        now_ns = time.time_ns()
        total, oldest = 0, None
        for path in sorted(self.dir.glob("*.jsonl")) if self.dir.is_dir() else []:
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # stored and deleted meanwhile
                continue
            total += size
            waiting = own[path] if path in own else not held(path)
            if waiting:
                created = created_ns(path)
                if created is not None and (oldest is None or created < oldest):
                    oldest = created
        return total, (None if oldest is None else max(0.0, (now_ns - oldest) / 1e9))

    def own_paths(self) -> set[Path]:
        with self._cond:
            return {s.path for s in self._open}

    def files(self) -> list[Path]:
        """Segments on disk other than this process's open ones (replayable unless another process holds them)."""
        if not self.dir.is_dir():
            return []
        own = self.own_paths()
        return [p for p in sorted(self.dir.glob("*.jsonl")) if p not in own]

    def find(self, request_id: str, record_index: int) -> Row | None:
        """A record in any segment on disk (this process's or another's), or None."""
        needle = request_id.encode()
        if not self.dir.is_dir():
            return None
        for path in sorted(self.dir.glob("*.jsonl")):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            start = data.find(needle)
            while start >= 0:
                begin = data.rfind(b"\n", 0, start) + 1
                end = data.find(b"\n", start)
                if end < 0:
                    break  # a line still being written
                rows, _ = parse_line(data[begin:end].decode("utf-8", "replace"))
                for row in rows:
                    if row[0] == request_id and row[1] == record_index:
                        return row
                start = data.find(needle, end)
        return None

    def replay_file(self, path: Path, insert: Callable[[list[Row]], None], batch_size: int) -> int | None:
        """Insert a closed segment's rows in batches, then delete it: the number of rows replayed, or None
        when the file is gone or locked by another process. Database errors propagate (file kept)."""
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return None
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return None  # being written or replayed by another process
            if not path.exists():  # replayed and deleted by another process meanwhile
                return None
            rows, bad, glued, tail = [], 0, 0, False
            for raw in f:
                if not raw.endswith(b"\n"):
                    tail = bool(raw.strip())  # a torn last line: never acknowledged (see `parse_line`)
                    break
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                found, torn = parse_line(line)
                rows.extend(found)
                if torn and found:
                    glued += 1
                elif torn:
                    bad += 1
            for start in range(0, len(rows), batch_size):
                insert(rows[start : start + batch_size])
            if tail or glued:
                log.warning(
                    "prediction log: %s: left out a torn last line: %s, torn line starts: %d "
                    "(bytes without a newline: a write that failed, never answered 200)",
                    path.name,
                    tail,
                    glued,
                )
            if bad:
                _private_text(Path(str(path) + ".corrupt"), f"{bad} unreadable lines in {path.name}\n")
                log.error("prediction log: %d unreadable lines in spool file %s", bad, path)
            path.unlink()
        return len(rows)
