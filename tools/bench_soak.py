"""Soak: `make bench-soak` (issue 26 item 4): minutes of mixed traffic at a fixed rate near 70% of
capacity against the service with PostgreSQL; per minute p50/p99, spool depth, worker RSS and database
rows; a flatness verdict; every answered record checked in the database.

What it does, in order:

1. a throwaway PostgreSQL 15 cluster (tools/pg_cluster.py, as bench-retention and the tests make one)
   and the service against it (`python -m model_service.server`, granian, the registry's champion:
   `make train gate` first; without a champion: one line, exit 2), SERVICE_WORKERS workers, its
   writer process moving the spool into PostgreSQL, LOG_SYNC as configured (default `write`);
2. capacity: SOAK_CAPACITY_SECONDS of the same mixed traffic, closed loop (SOAK_CAPACITY_CONNECTIONS
   connections, each sending its next request when the last is answered), after a short warm-up;
   requests answered per second is the capacity. SOAK_RATE (requests/s) skips this and is taken as is;
3. the soak: SOAK_MINUTES of OPEN-LOOP traffic at SOAK_RATE_SHARE x capacity requests/s. Request i is
   scheduled at i / rate seconds whatever the service does (no waiting for earlier answers), and its
   latency runs from that scheduled time to its answer: a service that stalls is charged for every
   request that had to wait, which a closed-loop generator (wrk, locust) would not send and so hides
   (coordinated omission). The mix is deterministic: a share SOAK_BATCH_SHARE of the requests (spread
   evenly) carries SOAK_BATCH_SIZE records, the others one record. The generator is one asyncio
   process (aiohttp, at most SOAK_CONNECTIONS connections; a request waiting for a connection is
   waiting, and counted so); its own lateness (when a request was sent against when it was due) is
   reported as "send lag" so that a generator that could not keep up shows;
4. every SOAK_SAMPLE_SECONDS: the spool's depth (bytes of its segment files on disk: the workers' open
   segments and the closed ones waiting for the writer; the same total the workers and the writer export
   as `model_service_log_spool_backlog_bytes`, read from the folder because an idle worker's gauge keeps
   its last value; the exported one is kept in results.json), the RSS of each granian worker and of the
   writer process (psutil), the load average; at each minute's end the rows of `predictions`
   (counted incrementally along the primary key: `RowCounter`);
5. the end: the service gets SIGTERM (graceful: drains, retires its spool, the writer moves what is
   left and exits), then every record the generator saw answered 200 (request id from X-Request-ID and
   its record count), capacity phase included, is looked up in PostgreSQL: missing and duplicated
   records must both be 0; records stored for requests the generator never saw answered (a timeout on
   its side) are reported apart, they are not an error;
6. the verdict: the first and the last third of the minutes are compared (single-record p99, worker
   RSS, spool backlog, database rows per minute against records answered per minute): "flat", or each
   drift with its likely reason.

Per-minute table, load average, machine and verdict go under `## Soak` in docs/benchmarks.md (only that
section); all figures also in SOAK_STATE_DIR/results.json (default var/bench-soak, emptied first).

Settings (environment, defaults): SOAK_MINUTES (15), SOAK_RATE_SHARE (0.7), SOAK_RATE (unset: measured),
SOAK_CAPACITY_SECONDS (20), SOAK_CAPACITY_CONNECTIONS (16), SOAK_BATCH_SHARE (0.1), SOAK_BATCH_SIZE
(100), SOAK_CONNECTIONS (64), SOAK_TIMEOUT (30 s a request), SOAK_SAMPLE_SECONDS (5; a divisor of 60,
so that a sample closes each minute), SOAK_STATE_DIR,
SOAK_WRITE_DOCS (1; 0 leaves docs/benchmarks.md alone), and the service's own (SERVICE_WORKERS,
SERVICE_THREADS, LOG_SYNC, ...). About SOAK_MINUTES + 2 minutes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEADING = "Soak"
SINGLE, BATCH = "single", "batch"
WRITER_MODULE = "model_service.prediction_log.writer_process"
MB = 1024 * 1024


# ---------------------------------------------------------------- pure parts (tests/unit/test_bench_soak.py)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank percentile (an observed value: the smallest one with at least q% of the values
    at or below it); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def kind_of(i: int, batch_share: float) -> str:
    """Request i's kind: exactly floor(n x share) of the first n requests are batches, spread evenly."""
    return BATCH if math.floor((i + 1) * batch_share) > math.floor(i * batch_share) else SINGLE


def schedule(rate: float, seconds: float, batch_share: float) -> Iterator[tuple[float, str]]:
    """The open-loop plan: (seconds after the start, kind) of every request, i / rate, decided before
    anything is sent and never moved by the answers."""
    if rate <= 0:
        return
    count = int(rate * seconds)
    for i in range(count):
        yield i / rate, kind_of(i, batch_share)


Send = Callable[[str], Awaitable[tuple[int, str | None, int]]]


async def open_loop(
    plan: Iterable[tuple[float, str]],
    send: Send,
    record: Callable[[float, str, int, str | None, int, float, float], None],
) -> None:
    """Send each request of `plan` at its time, each in its own task (an answer that is late delays
    nothing else), and `record(offset, kind, status, request id, records, latency, send lag)`: latency
    from the scheduled time to the answer, send lag from the scheduled time to the send. A send that
    raises counts as status 0 (no answer)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: set[asyncio.Task] = set()

    async def one(offset: float, kind: str) -> None:
        due = start + offset
        lag = loop.time() - due
        try:
            status, rid, records = await send(kind)
        except Exception:  # noqa: BLE001 - a failed request is a result: status 0, reported
            status, rid, records = 0, None, 0
        record(offset, kind, status, rid, records, loop.time() - due, lag)

    for offset, kind in plan:
        delay = start + offset - loop.time()
        # behind schedule: still yield, so that answers are read while the overdue requests go out
        await asyncio.sleep(max(0.0, delay))
        task = asyncio.create_task(one(offset, kind))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


@dataclass
class Sample:
    """Taken every SOAK_SAMPLE_SECONDS (offset in seconds from the soak's start)."""

    offset: float
    spool_bytes: float | None  # spool segment files on disk (being written, or waiting for the writer)
    worker_rss: list[int]
    writer_rss: int | None
    load1: float
    db_rows: int | None = None  # only at a minute's end
    spool_metric_bytes: float | None = None  # model_service_log_spool_backlog_bytes on /metrics


@dataclass
class Recorder:
    """Answers grouped by the minute they were scheduled in: latencies per kind, counts, answered ids."""

    latencies: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)
    ok: dict[int, int] = field(default_factory=dict)
    records: dict[int, int] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)
    lags: dict[int, list[float]] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)  # request id -> records, every phase

    def add(
        self, offset: float, kind: str, status: int, rid: str | None, records: int, latency: float, lag: float
    ) -> None:
        m = int(offset // 60)
        self.sent[m] = self.sent.get(m, 0) + 1
        self.lags.setdefault(m, []).append(lag)
        if status == 200:
            self.ok[m] = self.ok.get(m, 0) + 1
            self.records[m] = self.records.get(m, 0) + records
            self.latencies.setdefault(m, {}).setdefault(kind, []).append(latency)
            if rid is not None:
                self.answered[rid] = records
        else:
            self.failed[m] = self.failed.get(m, 0) + 1


@dataclass
class Minute:
    minute: int  # 1-based
    sent: int
    ok: int
    records: int
    non_200: int
    single_p50_ms: float | None
    single_p99_ms: float | None
    batch_p50_ms: float | None
    batch_p99_ms: float | None
    send_lag_p99_ms: float | None
    spool_max_bytes: float | None
    worker_rss_sum: int | None  # the minute's last sample
    worker_rss_max: int | None
    writer_rss: int | None
    db_rows: int | None  # at the minute's end
    db_rows_added: int | None
    load1: float | None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def minutes(recorder: Recorder, samples: list[Sample], count: int, rows_before: int = 0) -> list[Minute]:
    """One row per minute 0..count-1 of the soak: latencies by the minute a request was scheduled in,
    samples by the minute they close (m x 60 < offset <= (m + 1) x 60); spool as the minute's highest
    sample, RSS and load as its last, database rows as counted at its end (added: against the previous
    minute's count, the first against `rows_before`)."""
    rows: list[Minute] = []
    previous = rows_before
    for m in range(count):
        inside = [s for s in samples if m * 60 < s.offset <= (m + 1) * 60]
        spools = [s.spool_bytes for s in inside if s.spool_bytes is not None]
        last = inside[-1] if inside else None
        counted = [s.db_rows for s in inside if s.db_rows is not None]
        db_rows = counted[-1] if counted else None
        added = None if db_rows is None or previous is None else db_rows - previous
        previous = db_rows
        lat = recorder.latencies.get(m, {})
        rows.append(
            Minute(
                minute=m + 1,
                sent=recorder.sent.get(m, 0),
                ok=recorder.ok.get(m, 0),
                records=recorder.records.get(m, 0),
                non_200=recorder.failed.get(m, 0),
                single_p50_ms=_ms(percentile(lat.get(SINGLE, []), 50)),
                single_p99_ms=_ms(percentile(lat.get(SINGLE, []), 99)),
                batch_p50_ms=_ms(percentile(lat.get(BATCH, []), 50)),
                batch_p99_ms=_ms(percentile(lat.get(BATCH, []), 99)),
                send_lag_p99_ms=_ms(percentile(recorder.lags.get(m, []), 99)),
                spool_max_bytes=max(spools) if spools else None,
                worker_rss_sum=sum(last.worker_rss) if last and last.worker_rss else None,
                worker_rss_max=max(last.worker_rss) if last and last.worker_rss else None,
                writer_rss=last.writer_rss if last else None,
                db_rows=db_rows,
                db_rows_added=added,
                load1=last.load1 if last else None,
            )
        )
    return rows


@dataclass
class Durability:
    answered_requests: int
    answered_records: int
    stored_records: int
    missing: int  # answered records not stored
    duplicates: int  # rows beyond the records a request was answered with, or duplicated (id, index)
    unanswered_stored: int  # stored records of requests the generator never saw answered (its timeouts)


def durability(answered: dict[str, int], stored: dict[str, int], duplicate_rows: int = 0) -> Durability:
    """Answered (request id -> records answered 200) against stored (request id -> rows in the
    database, spool leftovers added). `duplicate_rows`: rows sharing a (request id, record index)."""
    missing = sum(max(0, n - stored.get(rid, 0)) for rid, n in answered.items())
    extra = sum(max(0, stored[rid] - n) for rid, n in answered.items() if rid in stored)
    unanswered = sum(n for rid, n in stored.items() if rid not in answered)
    return Durability(
        answered_requests=len(answered),
        answered_records=sum(answered.values()),
        stored_records=sum(stored.values()),
        missing=missing,
        duplicates=extra + duplicate_rows,
        unanswered_stored=unanswered,
    )


@dataclass
class Verdict:
    flat: bool
    findings: list[str]

    def text(self) -> str:
        return "flat" if self.flat else "; ".join(self.findings)


def _median(values: list[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _mean(values: list[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


P99_RISE = 0.5  # single-record p99: last third's median more than 50% above the first's ...
P99_RISE_MS = 2.0  # ... and by more than 2 ms
RSS_RISE = 0.10  # worker RSS: more than 10% ...
RSS_RISE_BYTES = 30 * MB  # ... and more than 30 MB
SPOOL_RISE = 2.0  # spool backlog: last third's mean more than twice the first's ...
SPOOL_RISE_BYTES = 4 * MB  # ... and more than 4 MB
ROWS_SHORT = 0.95  # database rows added per minute under 95% of the records answered per minute


def judge(rows: list[Minute]) -> Verdict:
    """Flat, or what drifted between the first and the last third of the minutes, with its likely
    reason. Thresholds above (noise on a shared 2-core machine is tens of percent for a p99)."""
    third = len(rows) // 3
    if third == 0:
        return Verdict(False, [f"{len(rows)} minute(s): too short to compare a first and a last third"])
    first, last = rows[:third], rows[-third:]
    findings: list[str] = []
    failed = sum(r.non_200 for r in rows)
    if failed:
        findings.append(f"{failed} requests not answered 200 (errors or timeouts)")

    spool_a = _mean([r.spool_max_bytes for r in first])
    spool_b = _mean([r.spool_max_bytes for r in last])
    spool_grew = (
        spool_a is not None
        and spool_b is not None
        and spool_b > SPOOL_RISE * spool_a
        and spool_b - spool_a > SPOOL_RISE_BYTES
    )
    records = sum(r.records for r in last)
    added = [r.db_rows_added for r in last]
    rows_short = (
        None not in added and records > 0 and sum(a for a in added if a is not None) < ROWS_SHORT * records
    )
    if spool_grew or rows_short:
        what = (
            f"spool grew from {spool_a / MB:.1f} to {spool_b / MB:.1f} MB (per-minute highs, mean of a third)"
            if spool_grew and spool_a is not None and spool_b is not None
            else "database rows added per minute fell behind the records answered"
        )
        findings.append(
            f"{what}: the writer process moves fewer records a minute into PostgreSQL than are answered "
            "(likely: its inserts, or its share of the 2 cores beside the workers and the generator, "
            "limit it at this rate); the spool absorbs the difference until SPOOL_MAX_BYTES"
        )

    load_a, load_b = _mean([r.load1 for r in first]), _mean([r.load1 for r in last])
    lag_b = _median([r.send_lag_p99_ms for r in last])
    for what, attr in (("single-record", "single_p99_ms"), ("batch", "batch_p99_ms")):
        p99_a = _median([getattr(r, attr) for r in first])
        p99_b = _median([getattr(r, attr) for r in last])
        if p99_a is None or p99_b is None or p99_b <= (1 + P99_RISE) * p99_a or p99_b - p99_a <= P99_RISE_MS:
            continue
        if lag_b is not None and lag_b > p99_a:
            why = f"the generator itself fell behind (send lag p99 {lag_b:.1f} ms): the machine, not the service"
        elif spool_grew:
            why = "the writer's growing catch-up competes with the workers for the cores"
        elif load_a is not None and load_b is not None and load_b > load_a * 1.25 + 0.5:
            why = f"the machine got busier (load average {load_a:.1f} -> {load_b:.1f})"
        else:
            last_rows = rows[-1].db_rows
            why = (
                "not explained by the spool, memory or load average: look at PostgreSQL (the table and its "
                f"unique index grew to {last_rows:,} rows) and at autovacuum/checkpoints"
                if last_rows
                else "not explained by the spool, memory or load average"
            )
        findings.append(
            f"{what} p99 rose from {p99_a:.1f} to {p99_b:.1f} ms (medians of a third): likely {why}"
        )

    for what, attr in (("worker RSS (sum)", "worker_rss_sum"), ("writer RSS", "writer_rss")):
        rss_a = _mean([getattr(r, attr) for r in first])
        rss_b = _mean([getattr(r, attr) for r in last])
        if rss_a and rss_b and rss_b > (1 + RSS_RISE) * rss_a and rss_b - rss_a > RSS_RISE_BYTES:
            findings.append(
                f"{what} grew from {rss_a / MB:.0f} to {rss_b / MB:.0f} MB: likely a leak or a cache that keeps "
                "filling (allocator arenas, per-request state); a longer run tells whether it levels off"
            )
    return Verdict(not findings, findings)


# ---------------------------------------------------------------- the run


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def settings_from_env() -> dict:
    return {
        "minutes": env_float("SOAK_MINUTES", 15),
        "rate_share": env_float("SOAK_RATE_SHARE", 0.7),
        "rate": env_float("SOAK_RATE", 0) or None,
        "capacity_seconds": env_float("SOAK_CAPACITY_SECONDS", 20),
        "capacity_connections": int(env_float("SOAK_CAPACITY_CONNECTIONS", 16)),
        "batch_share": env_float("SOAK_BATCH_SHARE", 0.1),
        "batch_size": int(env_float("SOAK_BATCH_SIZE", 100)),
        "connections": int(env_float("SOAK_CONNECTIONS", 64)),
        "timeout": env_float("SOAK_TIMEOUT", 30),
        "sample_seconds": env_float("SOAK_SAMPLE_SECONDS", 5),
    }


class Client:
    """POST /v1/predict with a prebuilt body per kind; (status, X-Request-ID, records)."""

    def __init__(self, url: str, key: str, record: dict, batch_size: int, connections: int, timeout: float):
        import aiohttp

        self.url = url + "/v1/predict"
        self.headers = {"X-API-Key": key, "Content-Type": "application/json"}
        self.bodies = {
            SINGLE: (json.dumps({"records": [record]}).encode(), 1),
            BATCH: (json.dumps({"records": [record] * batch_size}).encode(), batch_size),
        }
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def send(self, kind: str) -> tuple[int, str | None, int]:
        body, records = self.bodies[kind]
        async with self.session.post(self.url, data=body, headers=self.headers) as response:
            await response.read()
            return response.status, response.headers.get("X-Request-ID"), records

    async def close(self) -> None:
        await self.session.close()


async def closed_loop(
    client: Client, seconds: float, connections: int, batch_share: float, recorder: Recorder
) -> float:
    """Requests answered 200 per second with `connections` clients each sending its next request as
    soon as the last is answered (same mix as the soak)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    counter = iter(range(10**12))
    done = 0

    async def worker() -> None:
        nonlocal done
        while loop.time() < end:
            kind = kind_of(next(counter), batch_share)
            try:
                status, rid, records = await client.send(kind)
            except Exception:  # noqa: BLE001 - not answered: not counted
                status, rid, records = 0, None, 0
            if status == 200:
                done += 1
                if rid is not None:
                    recorder.answered[rid] = records

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (loop.time() - started)


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class Sampler(threading.Thread):
    """Spool backlog, RSS and load average every `every` seconds; the predictions count at each minute's
    end. Its own thread (the count waits on PostgreSQL without holding the event loop)."""

    def __init__(
        self, base_url: str, server_pid: int, db_url: str, spool_root: Path, start: float, every: float
    ):
        super().__init__(name="soak-sampler", daemon=True)
        self.base_url, self.server_pid, self.db_url = base_url, server_pid, db_url
        self.spool_root = spool_root
        self.rows = RowCounter(db_url)
        self.rows.count()  # what is there before the soak: the capacity phase
        self.start_at, self.every = start, every
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def processes(self) -> tuple[list[int], int | None]:
        import psutil

        workers, writer = [], None
        for child in psutil.Process(self.server_pid).children():
            try:
                cmd = " ".join(child.cmdline())
                rss = child.memory_info().rss
            except psutil.Error:
                continue
            if WRITER_MODULE in cmd:
                writer = rss
            elif "resource_tracker" not in cmd:
                workers.append(rss)
        return workers, writer

    def run(self) -> None:
        import requests

        session = requests.Session()
        next_minute = 60.0
        tick = 0
        while not self.stop.is_set():
            tick += 1
            due = self.start_at + tick * self.every
            self.stop.wait(max(0.0, due - time.monotonic()))
            offset = tick * self.every  # the due time: a minute's closing sample stays in its minute
            try:
                exported = metric(
                    session.get(self.base_url + "/metrics", timeout=10).text,
                    "model_service_log_spool_backlog_bytes",
                )
            except Exception:  # noqa: BLE001 - a missed sample shows as "-"
                exported = None
            workers, writer = self.processes()
            sample = Sample(offset, spool_bytes(self.spool_root), workers, writer, os.getloadavg()[0])
            sample.spool_metric_bytes = exported
            if offset >= next_minute - 1e-6:
                sample.db_rows = self.rows.count()
                next_minute += 60.0
            self.samples.append(sample)


def spool_bytes(root: Path) -> int:
    """Bytes of the spool's segment files (a segment deleted while listed counts nothing)."""
    total = 0
    for path in root.rglob("*.jsonl"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def wait_stored(db_url: str, records: int, timeout: float) -> float:
    """Seconds until the database holds at least `records` rows (at most `timeout`): the capacity
    phase's records moved before the soak starts."""
    started = time.monotonic()
    while time.monotonic() - started < timeout and (count_rows(db_url) or 0) < records:
        time.sleep(1)
    return time.monotonic() - started


def count_rows(url: str) -> int | None:
    """Rows in the predictions table (None while it cannot be counted); a full count, for before and
    after the soak (`RowCounter` during it)."""
    counted = count_since(url, 0)
    return None if counted is None else counted[0]


def count_since(url: str, last_id: int) -> tuple[int, int] | None:
    """(rows with an id above `last_id`, the highest id) in the predictions table: a range scan of its
    primary key, not a full scan; None while it cannot be counted."""
    from sqlalchemy import func, select

    from core.store import make_engine, predictions

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            n, top = conn.execute(
                select(func.count(), func.max(predictions.c.id)).where(predictions.c.id > last_id)
            ).one()
        return int(n), int(top if top is not None else last_id)
    except Exception:  # noqa: BLE001 - table not there yet, database busy: a missing figure
        return None
    finally:
        engine.dispose()


class RowCounter:
    """The predictions table's rows counted incrementally: each call counts only the rows past the
    highest id seen so far. A full `count(*)` each minute is a sequential scan of a table that grows by
    ~300k rows a minute (4.7M after the first full soak), taking both cores at each minute's end, longer
    every minute: it showed in the p99 it was measuring. Exact as long as ids commit in order, which the
    one writer process (one transaction per segment, one at a time) does."""

    def __init__(self, url: str):
        self.url = url
        self.rows = 0
        self.last_id = 0

    def count(self) -> int | None:
        counted = count_since(self.url, self.last_id)
        if counted is None:
            return None
        self.rows += counted[0]
        self.last_id = counted[1]
        return self.rows


def stored(url: str, spool_root: Path) -> tuple[dict[str, int], int, int]:
    """(request id -> records stored, rows sharing a (request id, record index), records left in the
    spool) after the service stopped; spool leftovers are counted as stored (the next start replays
    them) and reported."""
    from sqlalchemy import func, select

    from core.store import make_engine, predictions
    from model_service.prediction_log.spool import rows_from_line

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            by_request = dict(
                conn.execute(
                    select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id)
                ).all()
            )
            pairs = select(predictions.c.request_id, predictions.c.record_index).distinct().subquery()
            total = conn.execute(select(func.count()).select_from(predictions)).scalar_one()
            distinct = conn.execute(select(func.count()).select_from(pairs)).scalar_one()
    finally:
        engine.dispose()
    left = 0
    for segment in spool_root.rglob("*.jsonl"):
        for line in segment.read_text().splitlines():
            try:
                rows = rows_from_line(line) if line.strip() else []
            except ValueError:  # a line cut short by a kill: its request was not answered
                rows = []
            for row in rows:
                by_request[row[0]] = by_request.get(row[0], 0) + 1
                left += 1
    return by_request, int(total - distinct), left


def start_postgres() -> tuple[str, Callable[[], None]] | str:
    """A throwaway PostgreSQL 15 cluster with a `soak` database: (url, drop), or why there is none."""
    from sqlalchemy import text

    from core.store import make_engine
    from operations.waiting import free_port
    from tools import pg_cluster

    if not pg_cluster.installed():
        return "PostgreSQL 15 is not installed (make system-packages)"
    name, port = f"soak{os.getpid()}", free_port()
    failed = pg_cluster.create(name, port)
    if failed:
        return failed
    pg_cluster.start(name)
    base = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    admin = make_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(30):  # it accepts connections a moment after it started
            try:
                with admin.connect() as conn:
                    conn.execute(text("CREATE DATABASE soak"))
                break
            except Exception:  # retried, the last one raised
                if attempt == 29:
                    pg_cluster.drop(name)
                    raise
                time.sleep(1)
    finally:
        admin.dispose()
    return f"{base}/soak", lambda: pg_cluster.drop(name)


def start_service(work: Path, key: str, db_url: str) -> tuple[subprocess.Popen, str]:
    from operations.waiting import free_port

    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "API_KEYS": key,
        "DATABASE_URL": db_url,
        "SPOOL_DIR": str(work / "spool"),
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "model_service.server"],
        cwd=REPO,
        env=env,
        stdout=(work / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(url: str, proc: subprocess.Popen, workers: int, timeout: float = 180) -> None:
    """Every worker has loaded the model (/metrics counts one loaded model per worker)."""
    import requests

    from operations.waiting import wait_http, wait_until

    wait_http(url + "/health", timeout, proc)

    def loaded() -> bool:
        value = metric(requests.get(url + "/metrics", timeout=10).text, "model_service_model_loaded")
        return value is not None and value >= workers

    wait_until(loaded, timeout, "every worker loaded the model", process=proc)


def stop_service(proc: subprocess.Popen, timeout: float = 120) -> int | None:
    """SIGTERM (graceful: drain, retire the spool, the writer moves it) and wait."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


async def drive(
    url: str, key: str, record: dict, cfg: dict, server_pid: int, db_url: str, spool_root: Path, out: dict
) -> Recorder:
    """Capacity (unless SOAK_RATE), then the open-loop soak with the sampler running."""
    recorder = Recorder()
    client = Client(url, key, record, cfg["batch_size"], cfg["connections"], cfg["timeout"])
    try:
        rate = cfg["rate"]
        if rate is None:
            warm = Recorder()
            await closed_loop(client, 5, cfg["capacity_connections"], cfg["batch_share"], warm)
            capacity = await closed_loop(
                client, cfg["capacity_seconds"], cfg["capacity_connections"], cfg["batch_share"], recorder
            )
            recorder.answered.update(warm.answered)
            out["capacity_rps"] = capacity
            rate = capacity * cfg["rate_share"]
            print(
                f"bench-soak: capacity {capacity:,.0f} requests/s (closed loop); soak at {rate:,.0f}/s",
                flush=True,
            )
            out["capacity_drain_seconds"] = await asyncio.to_thread(
                wait_stored, db_url, sum(recorder.answered.values()), 180
            )
        out["rate_rps"] = rate
        out["load_before"] = os.getloadavg()[0]
        seconds = cfg["minutes"] * 60
        start = time.monotonic()
        sampler = Sampler(url, server_pid, db_url, spool_root, start, cfg["sample_seconds"])
        out["rows_before"] = sampler.rows.rows
        sampler.start()
        await open_loop(schedule(rate, seconds, cfg["batch_share"]), client.send, recorder.add)
        out["soak_seconds"] = time.monotonic() - start
        while time.monotonic() - start < seconds + 30 and not (
            sampler.samples and sampler.samples[-1].offset >= seconds - 1
        ):
            await asyncio.sleep(0.2)  # the last minute's closing sample (its row count)
        sampler.stop.set()
        sampler.join(30)
        out["samples"] = sampler.samples
        out["worker_processes"] = max((len(x.worker_rss) for x in sampler.samples), default=0)
    finally:
        await client.close()
    return recorder


def fmt(value: float | int | None, spec: str = ".1f", scale: float = 1.0) -> str:
    return "-" if value is None else format(value if scale == 1.0 else value / scale, spec)


def table(rows: list[Minute]) -> str:
    lines = [
        "| minute | requests sent | answered 200 | records answered | non-200 | single p50 / p99 ms | "
        "batch p50 / p99 ms | send lag p99 ms | spool max MB | worker RSS sum / max MB | writer RSS MB | "
        "DB rows | DB rows added | load avg |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.minute} | {r.sent:,} | {r.ok:,} | {r.records:,} | {r.non_200:,} | "
            f"{fmt(r.single_p50_ms)} / {fmt(r.single_p99_ms)} | {fmt(r.batch_p50_ms)} / {fmt(r.batch_p99_ms)} | "
            f"{fmt(r.send_lag_p99_ms)} | {fmt(r.spool_max_bytes, '.2f', MB)} | "
            f"{fmt(r.worker_rss_sum, '.0f', MB)} / {fmt(r.worker_rss_max, '.0f', MB)} | {fmt(r.writer_rss, '.0f', MB)} | "
            f"{fmt(r.db_rows, ',')} | {fmt(r.db_rows_added, ',')} | {fmt(r.load1, '.2f')} |"
        )
    return "\n".join(lines)


def span(values: list[float | int | None], spec: str = ".1f", scale: float = 1.0) -> str:
    """`low-high` of the values present ('-' for none)."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    return f"{fmt(min(present), spec, scale)}-{fmt(max(present), spec, scale)}"


def summary(rows: list[Minute]) -> str:
    """One line of per-minute ranges (the report's and the commit's figures)."""
    return (
        f"per minute: single p50 {span([r.single_p50_ms for r in rows])} ms, p99 "
        f"{span([r.single_p99_ms for r in rows])} ms; batch p50 {span([r.batch_p50_ms for r in rows])} ms, "
        f"p99 {span([r.batch_p99_ms for r in rows])} ms; spool max "
        f"{span([r.spool_max_bytes for r in rows], '.2f', MB)} MB; worker RSS sum "
        f"{span([r.worker_rss_sum for r in rows], '.0f', MB)} MB; writer RSS "
        f"{span([r.writer_rss for r in rows], '.0f', MB)} MB; DB rows added "
        f"{span([r.db_rows_added for r in rows], ',')}; non-200 {sum(r.non_200 for r in rows)}"
    )


def report(cfg: dict, out: dict, rows: list[Minute], dur: Durability, verdict: Verdict) -> str:
    measured = "capacity_rps" in out
    mix_records = (1 - cfg["batch_share"]) + cfg["batch_share"] * cfg["batch_size"]
    ok = dur.missing == 0 and dur.duplicates == 0
    intro = [
        f"`make bench-soak` (tools/bench_soak.py): the model service (granian, {out['workers']} workers x "
        f"{out['threads']} threads, LOG_SYNC={out['log_sync']}, model `{out['model']}` v{out['version']} "
        f"({out['algorithm']})) and its writer process into a throwaway PostgreSQL 15 cluster, all on this "
        "machine with the load generator.",
        (
            f"Capacity {out['capacity_rps']:,.0f} requests/s, measured closed loop "
            f"({cfg['capacity_seconds']:.0f} s, {cfg['capacity_connections']} connections, the same mix, after "
            f"5 s of warm-up); the soak at {cfg['rate_share']:.0%} of it:"
            if measured
            else "Rate set by SOAK_RATE (no capacity measured):"
        ),
        f"**{cfg['minutes']:g} minute(s) open loop at {out['rate_rps']:,.0f} requests/s** "
        f"(~{out['rate_rps'] * mix_records:,.0f} records/s), each request scheduled at a fixed time whatever "
        f"the answers, {1 - cfg['batch_share']:.0%} single records and {cfg['batch_share']:.0%} batches of "
        f"{cfg['batch_size']} (spread evenly); latency from the scheduled time to the answer, so a stall is "
        "charged to every request it held up (no coordinated omission).",
        f"The generator: one asyncio + aiohttp process, at most {cfg['connections']} connections; send lag is "
        "how late it sent a request (high: the generator, not the service, fell behind).",
        "Spool: the highest total of the spool's segment files on disk (the workers' open segments and the "
        f"closed ones waiting for the writer) sampled in the minute (every {cfg['sample_seconds']:g} s); "
        f"RSS: granian's {out['worker_processes']} worker processes (sum / largest) and the writer process, "
        "the minute's last sample; DB rows: the rows of "
        "`predictions` at the minute's end, counted along its primary key (only the rows past the last "
        "minute's highest id: a full `count(*)` each minute, a sequential scan of the growing table, "
        "competed with the service in the first run).",
        f"Load average (1 min) {out['load_before']:.2f} before the soak and {out['load_after']:.2f} at its "
        f"end; {out['rows_before']:,} rows stored before it (the capacity phase).",
    ]
    return "\n".join(
        [
            " ".join(intro),
            "",
            table(rows),
            "",
            summary(rows) + ".",
            "",
            f"**Verdict: {verdict.text()}.** (First and last third of the minutes compared: single-record p99 "
            "medians, worker RSS, spool, rows added against records answered.)",
            "",
            f"Every answered record stored: after the soak the service got SIGTERM (exit {out['exit_code']}, "
            f"stopped in {out['stop_seconds']:.1f} s), then the {dur.answered_records:,} records of the "
            f"{dur.answered_requests:,} requests answered 200 (capacity phase included) were looked up by "
            f"request id in PostgreSQL ({out['spool_left']:,} records left in the spool counted as stored): "
            f"**missing {dur.missing:,}, duplicates {dur.duplicates:,}** ({'pass' if ok else '**FAIL**'}); "
            f"{dur.stored_records:,} records stored, {dur.unanswered_stored:,} of them for requests the "
            "generator did not see answered (its timeouts).",
        ]
    )


def main() -> int:
    from core.dataset import load_config
    from core.settings import Settings
    from tools.bench_report import champion, update_section

    found = champion("bench-soak")
    if found is None:
        return 2
    settings, mv = found
    cfg = settings_from_env()
    record = load_config(Settings.from_env().dataset_config).example_record
    work = Path(os.environ.get("SOAK_STATE_DIR") or REPO / "var" / "bench-soak").resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pg = start_postgres()
    if isinstance(pg, str):
        print(f"bench-soak: no PostgreSQL: {pg}", file=sys.stderr)
        return 2
    db_url, drop = pg
    key = secrets.token_hex(16)
    out: dict = {
        "model": settings.model_name,
        "version": str(mv.version),
        "algorithm": mv.tags.get("algorithm", "?"),
        "workers": settings.workers,
        "threads": settings.threads,
        "log_sync": settings.log_sync,
    }
    proc = None
    try:
        proc, url = start_service(work, key, db_url)
        wait_ready(url, proc, settings.workers)
        recorder = asyncio.run(drive(url, key, record, cfg, proc.pid, db_url, work / "spool", out))
        out["load_after"] = os.getloadavg()[0]
        stopped = time.monotonic()
        out["exit_code"] = stop_service(proc)
        out["stop_seconds"] = time.monotonic() - stopped
        by_request, duplicate_rows, out["spool_left"] = stored(db_url, work / "spool")
    finally:
        if proc is not None:
            stop_service(proc)
        drop()
    count = math.ceil(cfg["minutes"])
    samples = out.pop("samples")
    rows = minutes(recorder, samples, count, out["rows_before"])
    dur = durability(recorder.answered, by_request, duplicate_rows)
    verdict = judge(rows)
    body = report(cfg, out, rows, dur, verdict)
    results = {
        "settings": cfg,
        "run": out,
        "minutes": [asdict(r) for r in rows],
        "samples": [asdict(x) for x in samples],
        "durability": asdict(dur),
        "verdict": asdict(verdict),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    (work / "results.json").write_text(json.dumps(results, indent=1))
    if os.environ.get("SOAK_WRITE_DOCS", "1") != "0":
        update_section(HEADING, body)
    print(body)
    return 0 if dur.missing == 0 and dur.duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
