"""The prediction log's retention over 60 simulated days: `make bench-retention`.

A simulated clock, not 60 real days: for each day d the bench inserts BENCH_RATE records (default
20,000) with `created_at` spread over day d (the service's own insert, `LogStore.insert`, 500 rows a
batch) and labels for one record in ten (received the same day), then runs the retention job "as of"
day d+1 00:05 with a BENCH_WINDOW_DAYS window (default 30; core.retention.run_retention, batches of
LOG_RETENTION_BATCH_SIZE) into a local archive folder. Per day it records the database's rows and size,
the archive's bytes, the job's time (and the part spent deleting) and the service's write latency while
the job runs: a writer in its own process (the service's, as in production where the job runs in the
monitor's) drives the real `PredictionLog` (spool, queue, background inserts) at
BENCH_WRITER_RPS (default 50) requests of 10 records each; `submit` is what a request waits (spool append), `insert`
the background batch insert into the database (what a delete batch can hold up). Both are also measured
for BENCH_BASELINE_SECONDS without the job.

Databases: SQLite (always) and PostgreSQL 15 (a throwaway cluster made with pg_createcluster, as the
tests do; skipped when not installed; BENCH_DATABASES=sqlite,postgresql). State in BENCH_STATE_DIR
(default var/bench-retention, emptied first); per-day figures in its results.json; the table goes under
`## Retention` in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, text

from core import retention, store
from core.objects import ObjectStore
from model_service.prediction_log.store import LogStore
from model_service.prediction_log.writer import PredictionLog
from operations.waiting import free_port
from tools import pg_cluster
from tools.bench_report import update_section

REPO = Path(__file__).resolve().parent.parent
NOTE = (
    "DB rows count the simulated traffic (exactly window x rate past the window: 600,000 of 20,000 a day "
    "at the defaults) plus the writer's own records, logged while each job ran with the next day's time: "
    "about 1,000-2,500 a day once the job takes seconds (day 31 on), so they add up inside the window until "
    "day 61, which is why the count still creeps up past day 31. DB MB: SQLite's file and WAL (freed pages "
    "are reused, the file is not shrunk); PostgreSQL's pg_total_relation_size of the three tables (dead "
    "rows are reused after autovacuum)."
)
START = datetime(2026, 1, 1, tzinfo=UTC)
RECORD = {
    "gender": "Female",
    "SeniorCitizen": 0,
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": 12,
    "PhoneService": "Yes",
    "MultipleLines": "No",
    "InternetService": "Fiber optic",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "Yes",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": 70.35,
    "TotalCharges": 844.2,
}


@dataclass
class Day:
    day: int
    db_rows: int
    db_bytes: int
    archive_bytes: int
    job_seconds: float
    delete_seconds: float
    archived: int
    submit_p99_ms: float | None
    insert_p99_ms: float | None
    insert_max_ms: float | None


@dataclass
class Run:
    database: str
    rate: int
    window: int
    batch: int
    baseline_submit_p99_ms: float = 0.0
    baseline_insert_p99_ms: float = 0.0
    days: list[Day] = field(default_factory=list)


class Writer:
    """The service's write path at a fixed rate, timing `submit` and the background inserts."""

    def __init__(self, url: str, spool: Path, rps: float):
        self.plog = PredictionLog(url, spool, fsync=False, flush_seconds=0.05).start()
        self.rps = rps
        self.submits: list[float] = []
        self.inserts: list[float] = []
        self.errors = 0
        self.at = START
        real_insert = self.plog.store.insert

        def timed_insert(rows):
            started = time.perf_counter()
            real_insert(rows)
            self.inserts.append(time.perf_counter() - started)

        self.plog.store.insert = timed_insert  # type: ignore[method-assign]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        period = 1.0 / self.rps
        nxt = time.perf_counter()
        scores, labels = np.full(10, 0.3), np.zeros(10, dtype=np.int64)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self.plog.submit(
                    str(uuid.uuid4()), self.at, "telco-churn", "1", [RECORD] * 10, scores, labels, 2.0
                )
            except Exception:  # noqa: BLE001 - counted, reported
                self.errors += 1
            self.submits.append(time.perf_counter() - started)
            nxt += period
            time.sleep(max(0.0, nxt - time.perf_counter()))

    def measure(self):
        """Start measuring: returns a function that stops and gives (submit p99, insert p99, insert max) ms."""
        self.plog.flush(timeout=30)
        self.submits, self.inserts = [], []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

        def stop() -> tuple[float | None, float | None, float | None]:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.plog.flush(timeout=30)
            return pct(self.submits), pct(self.inserts), (max(self.inserts) * 1000 if self.inserts else None)

        return stop

    def close(self) -> None:
        self.plog.close()


def writer_process(url: str, spool: str, rps: float, conn) -> None:
    """The service's side, in its own process (as in production: the job runs in the monitor's)."""
    writer = Writer(url, Path(spool), rps)
    stop = None
    while True:
        command, arg = conn.recv()
        if command == "start":
            writer.at = arg
            stop = writer.measure()
            conn.send("started")
        elif command == "stop":
            conn.send((*stop(), writer.errors))
        else:
            writer.close()
            conn.send("closed")
            return


class RemoteWriter:
    """`Writer` in a spawned process, driven over a pipe: start(at) ... stop() -> figures."""

    def __init__(self, url: str, spool: Path, rps: float):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=writer_process, args=(url, str(spool), rps, child), daemon=True)
        self.process.start()
        self.errors = 0

    def start(self, at: datetime) -> None:
        self.conn.send(("start", at))
        self.conn.recv()

    def stop(self) -> tuple[float | None, float | None, float | None]:
        self.conn.send(("stop", None))
        submit, insert, most, self.errors = self.conn.recv()
        return submit, insert, most

    def close(self) -> None:
        self.conn.send(("close", None))
        self.conn.recv()
        self.process.join(30)


def pct(values: list[float], q: float = 99) -> float | None:
    return float(np.percentile(values, q) * 1000) if values else None


def fill_day(log: LogStore, day: datetime, rate: int) -> None:
    step = 86_400 / rate
    batch, labels = [], []
    rng = np.random.default_rng(int(day.timestamp()))
    tenure, charges, scores = rng.integers(0, 72, rate), rng.uniform(18, 120, rate), rng.random(rate)
    contracts = rng.choice(["Month-to-month", "One year", "Two year"], rate)
    for i in range(rate):
        rid = str(uuid.uuid4())
        record = {
            **RECORD,
            "tenure": int(tenure[i]),
            "MonthlyCharges": round(float(charges[i]), 2),
            "TotalCharges": round(float(charges[i] * max(1, tenure[i])), 2),
            "Contract": str(contracts[i]),
        }
        at = day + timedelta(seconds=i * step)
        score = float(scores[i])
        batch.append(
            (rid, 0, at, "telco-churn", "1", record, score, int(score > 0.5), float(1 + 4 * scores[i]))
        )
        if i % 10 == 0:  # a label for one record in ten, received the same day
            labels.append(
                {"request_id": rid, "record_index": 0, "label": 1, "received_at": day + timedelta(hours=23)}
            )
        if len(batch) == 500:
            log.insert(batch)
            batch = []
    if batch:
        log.insert(batch)
    with log.engine.begin() as conn:
        conn.execute(store.feedback.insert(), labels)


def db_size(log: LogStore) -> int:
    with log.engine.connect() as conn:
        if log.engine.dialect.name == "sqlite":
            path = Path(log.engine.url.database)
            return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
        return int(
            conn.execute(
                text(
                    "SELECT pg_total_relation_size('predictions') + pg_total_relation_size('feedback') "
                    "+ pg_total_relation_size('shadow_predictions')"
                )
            ).scalar_one()
        )


def bench(url: str, name: str, state: Path, rate: int, days: int, window: int, batch: int) -> Run:
    log = LogStore(url)
    log.ensure_tables()
    archive = ObjectStore(str(state / f"archive-{name}"))
    writer = RemoteWriter(url, state / f"spool-{name}", float(os.environ.get("BENCH_WRITER_RPS", "50")))
    run = Run(name, rate, window, batch)
    writer.start(START)
    time.sleep(float(os.environ.get("BENCH_BASELINE_SECONDS", "5")))
    base = writer.stop()
    run.baseline_submit_p99_ms, run.baseline_insert_p99_ms = base[0] or 0.0, base[1] or 0.0
    try:
        for d in range(days):
            day = START + timedelta(days=d)
            fill_day(log, day, rate)
            now = day + timedelta(days=1, minutes=5)  # the job's "now"; the writer's records are that day's
            writer.start(now)
            result = retention.run_retention(log.engine, archive, window, now=now, batch=batch)
            submit_p99, insert_p99, insert_max = writer.stop()
            with log.engine.connect() as conn:
                rows = conn.execute(select(func.count()).select_from(store.predictions)).scalar_one()
            tables = result.tables.values()
            row = Day(
                d + 1,
                rows,
                db_size(log),
                sum(t.bytes for t in tables),
                result.seconds,
                sum(t.delete_seconds for t in tables),
                result.tables["predictions"].archived,
                submit_p99,
                insert_p99,
                insert_max,
            )
            run.days.append(row)
            print(json.dumps({"database": name, **asdict(row)}), flush=True)
    finally:
        writer.close()
    if writer.errors:
        raise RuntimeError(f"{writer.errors} writes failed while the job ran")
    return run


def start_postgres(state: Path):
    """A throwaway PostgreSQL 15 cluster (as tests/conftest.py makes one); (url, stop) or None."""
    if not pg_cluster.installed():
        return None
    name, port = f"benchret{os.getpid()}", free_port()
    failed = pg_cluster.create(name, port)
    if failed:
        print(f"bench-retention: no PostgreSQL ({failed})", file=sys.stderr)
        return None
    pg_cluster.start(name)
    base = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    admin = store.make_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    for _ in range(30):  # the cluster accepts connections a moment after it started
        try:
            with admin.connect() as conn:
                conn.execute(text("CREATE DATABASE bench"))
            break
        except Exception:  # noqa: BLE001 - retried, then raised below
            time.sleep(1)
    admin.dispose()

    def stop() -> None:
        pg_cluster.drop(name)

    return f"{base}/bench", stop


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def table(runs: list[Run]) -> str:
    shown = {1, 5, 10, 15, 20, 25, 29, 30, 31, 32, 35, 40, 45, 50, 55, 60}
    lines = []
    for run in runs:
        lines += [
            f"**{run.database}**: {run.rate:,} records/day, window {run.window} days, delete batches of "
            f"{run.batch}. Without the job: submit p99 {run.baseline_submit_p99_ms:.2f} ms, background "
            f"insert p99 {run.baseline_insert_p99_ms:.1f} ms.",
            "",
            "| day | DB rows | DB MB | archive MB that day | job s | of which deletes s | "
            "submit p99 ms (during job) | insert p99 / max ms (during job) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for d in run.days:
            if d.day not in shown and d.day != len(run.days):
                continue
            ins = "-" if d.insert_p99_ms is None else f"{d.insert_p99_ms:.1f} / {d.insert_max_ms:.1f}"
            sub = "-" if d.submit_p99_ms is None else f"{d.submit_p99_ms:.2f}"
            lines.append(
                f"| {d.day} | {d.db_rows:,} | {mb(d.db_bytes)} | {mb(d.archive_bytes)} | {d.job_seconds:.2f} | "
                f"{d.delete_seconds:.2f} | {sub} | {ins} |"
            )
        past = [d for d in run.days if d.day > run.window + 1]
        if past:
            per_record = sum(d.archive_bytes for d in past) / max(1, sum(d.archived for d in past))
            lines += [
                "",
                f"Past the window (days {past[0].day}-{past[-1].day}): DB rows {min(d.db_rows for d in past):,}-"
                f"{max(d.db_rows for d in past):,}, DB size {mb(min(d.db_bytes for d in past))}-"
                f"{mb(max(d.db_bytes for d in past))} MB; archive {per_record:.0f} bytes a record (Parquet, "
                f"zstd; labels and shadow scores included); job {np.median([d.job_seconds for d in past]):.2f} s "
                f"a day (median), deletes {np.median([d.delete_seconds for d in past]):.2f} s of it.",
                "",
            ]
    return "\n".join(lines)


def main() -> int:
    state = Path(os.environ.get("BENCH_STATE_DIR") or REPO / "var" / "bench-retention").resolve()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    rate = int(os.environ.get("BENCH_RATE", "20000"))
    days = int(os.environ.get("BENCH_DAYS", "60"))
    window = int(os.environ.get("BENCH_WINDOW_DAYS", "30"))
    batch = int(os.environ.get("LOG_RETENTION_BATCH_SIZE", "2000"))
    wanted = os.environ.get("BENCH_DATABASES", "sqlite,postgresql").split(",")
    runs: list[Run] = []
    started = time.perf_counter()
    if "sqlite" in wanted:
        runs.append(bench(f"sqlite:///{state / 'service.db'}", "SQLite", state, rate, days, window, batch))
    if "postgresql" in wanted:
        pg = start_postgres(Path(tempfile.gettempdir()))
        if pg is None:
            print("bench-retention: PostgreSQL 15 not installed: SQLite only", file=sys.stderr)
        else:
            url, stop = pg
            try:
                runs.append(bench(url, "PostgreSQL", state, rate, days, window, batch))
            finally:
                stop()
    (state / "results.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    body = (
        f"`make bench-retention` (tools/bench_retention.py): {days} simulated days (a simulated clock: each day's "
        "records are inserted with that day's time, then the job runs as of the next day 00:05), the "
        "retention job (core/retention.py) into a local archive folder. Rows shown: a selection of days "
        "(every day in var/bench-retention/results.json). `submit` is what a request waits for the log "
        "(the real PredictionLog: spool append, LOG_SYNC=write), `insert` the writer's background batch "
        f"insert into the database, both while the job runs (a writer at {os.environ.get('BENCH_WRITER_RPS', '50')} "
        "requests/s of 10 records, in its own process); the service's HTTP layer (granian) was not in the "
        "loop: a request waits for `submit` only, the database insert is off the request path. "
        f"Whole bench {time.perf_counter() - started:.0f} s. The machine was shared and noisy during the "
        "run: read the times as orders of magnitude. " + NOTE + "\n\n" + table(runs)
    )
    update_section("Retention", body)
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
