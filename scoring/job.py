"""A scoring run: open the table, check its columns, score it in record batches, write, log.

The in-process engine streams: `pyarrow.dataset` (Parquet, a file or a folder of part files) or
`pyarrow.csv.open_csv` (CSV, every column read as text and checked by `scoring.table`) hand over one
record batch at a time; each is scored and written before the next is read, so memory stays at a few
batches (SCORE_BATCH_ROWS) whatever the size of the table. The output and the reject file are written
under a temporary name and renamed at the end: a failed run leaves no half-written table.

Every run is logged to MLflow (experiment SCORE_EXPERIMENT): rows in, out and rejected, seconds,
rows per second, the model's name, version and alias, input and output. With SCORE_MONITOR_SAMPLE=N a
uniform sample of N scored rows (a bottom-k sample over the whole table: one random key per row, the N
smallest kept) goes to the `predictions` table the monitor reads (`core/store.py`), with request ids
starting `batch-`, so the next monitor run checks the batch for drift like online traffic.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from core import registry
from core.feature_schema import CATEGORICAL
from scoring.model import Described, ScoringModel
from scoring.settings import ScoreSettings
from scoring.table import (
    LABEL,
    MODEL_NAME,
    MODEL_VERSION,
    BatchScorer,
    Prepared,
    check_columns,
    output_schema,
    reject_schema,
)

log = logging.getLogger("scoring")
CSV_BLOCK_BYTES = 16 << 20


class InputError(ValueError):
    """The input or output cannot be used as named (no such file, unknown format): one line."""


def table_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")) or path.is_dir():
        return "parquet"
    raise InputError(f"{path}: unknown table format (use a .csv or a .parquet file)")


def rejects_path(settings: ScoreSettings, output: Path) -> Path:
    if settings.rejects is not None:
        return settings.rejects
    return output.with_name(output.name + ".rejects.csv")


@dataclass
class Source:
    """An opened input: its schema (checked) and its record batches, read on demand."""

    path: Path
    format: str
    schema: pa.Schema
    total_rows: int | None
    columns: list[str]
    dictionary_columns: set[str] = field(default_factory=set)

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        # categorical columns read dictionary-encoded: each distinct value is checked and coded once.
        # One file at a time, one record batch at a time (no read-ahead queue: memory stays flat)
        if self.format == "parquet":
            for part in parquet_files(self.path):
                reader = pq.ParquetFile(part, read_dictionary=sorted(self.dictionary_columns))
                yield from reader.iter_batches(batch_size=batch_rows, columns=self.columns)
            return
        text = pa.dictionary(pa.int32(), pa.string())
        options = pacsv.ConvertOptions(
            include_columns=self.columns,
            column_types={c: text if c in self.dictionary_columns else pa.string() for c in self.columns},
            strings_can_be_null=True,
        )
        reader = pacsv.open_csv(
            self.path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES), convert_options=options
        )
        for batch in reader:
            if batch.num_rows:
                yield batch


def parquet_files(path: Path) -> list[Path]:
    """A Parquet file, or the part files of a folder (Spark's and Hive's layout), in name order."""
    if not path.is_dir():
        return [path]
    return sorted(
        p
        for p in path.rglob("*.parquet")
        if not any(x.startswith((".", "_")) for x in p.relative_to(path).parts)
    )


def csv_header(path: Path) -> list[str]:
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def open_source(path: Path, keys: tuple[str, ...], described: Described) -> Source:
    """Open the input and check its columns against the model (ColumnError before any row is read)."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = table_format(path)
    specs = described.specs
    if fmt == "parquet":
        try:
            dataset = pads.dataset(path, format="parquet")
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a Parquet table ({exc})") from None
        schema, total = dataset.schema, None
    else:
        names = csv_header(path)
        schema, total = pa.schema([pa.field(n, pa.string()) for n in names]), None
    check_columns(schema, specs, keys)
    columns = list(dict.fromkeys([*keys, *[s.name for s in specs]]))
    if fmt == "parquet":
        total = pads.dataset(path, format="parquet").count_rows()
    dictionary = {
        s.name
        for s in specs
        if s.type == CATEGORICAL and pa.types.is_string(schema.field(s.name).type) and s.name not in keys
    }
    read = pa.schema(
        [
            pa.field(c, pa.dictionary(pa.int32(), pa.string())) if c in dictionary else schema.field(c)
            for c in columns
        ]
    )
    return Source(path, fmt, read, total, columns, dictionary)


class Writer:
    """A Parquet or CSV file written under a temporary name, renamed on `commit`."""

    def __init__(self, path: Path, schema: pa.Schema, dictionary: list[str] | None = None):
        """`dictionary`: the Parquet columns worth dictionary-encoding (default: all). The scores
        dictionary-encode only the label and the model's name and version: keys and probabilities are
        (nearly) all distinct, and a dictionary of them costs twice the CPU for a larger file."""
        self.path = path
        self.format = table_format(path) if path.suffix else "csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if self.format == "parquet":
            self._writer: Any = pq.ParquetWriter(
                self.tmp, schema, use_dictionary=True if dictionary is None else dictionary
            )
        else:
            self._writer = pacsv.CSVWriter(self.tmp, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class Progress:
    """A line on stderr at most every `every` seconds: rows, share done, rows/s, rejected."""

    def __init__(self, total: int | None, every: float, stream=None):
        self.total, self.every = total, every
        self.stream = stream or sys.stderr
        self.started = self.last = time.perf_counter()

    def tick(self, rows: int, rejected: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and (self.every <= 0 or now - self.last < self.every):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        share = f" ({rows / self.total:.0%})" if self.total else ""
        of = f" of {self.total:,}" if self.total else ""
        print(
            f"score: {rows:,}{of} rows{share}, {rows / elapsed:,.0f} rows/s, {rejected:,} rejected",
            file=self.stream,
            flush=True,
        )


@dataclass
class MonitorSample:
    """A uniform sample of the scored rows (bottom-k over one random key per row)."""

    size: int
    seed: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    rows: list[tuple[int, dict[str, Any], float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def offer(self, scorer: BatchScorer, batch: pa.RecordBatch, prepared: Prepared, first_row: int) -> None:
        if self.size <= 0 or prepared.kept is None:
            return
        kept = np.flatnonzero(prepared.kept)
        u = self._rng.random(len(kept))
        if len(kept) > self.size:
            pick = np.argpartition(u, self.size - 1)[: self.size]
        else:
            pick = np.arange(len(kept))
        if len(self.keys) >= self.size:
            pick = pick[u[pick] < self.keys.max()]
        if not len(pick):
            return
        records = scorer.records(batch, kept[pick])
        proba = prepared.proba[pick]
        new = [
            (first_row + int(kept[i]), rec, float(p), int(p >= scorer.threshold))
            for i, rec, p in zip(pick, records, proba, strict=True)
        ]
        keys = np.concatenate([self.keys, u[pick]])
        rows = self.rows + new
        order = np.argsort(keys, kind="stable")[: self.size]
        self.keys, self.rows = keys[order], [rows[i] for i in order]

    def write(self, database_url: str, model: ScoringModel, seconds_per_row: float) -> int:
        if not self.rows:
            return 0
        from core import store  # SQLAlchemy and the service's tables: only for runs that write a sample

        engine = store.engine_for(database_url)
        request_id = "batch-" + uuid.uuid4().hex[:30]
        now = store.utcnow()
        rows = [
            {
                "request_id": request_id,
                "record_index": row,
                "created_at": now,
                "model_name": model.name,
                "model_version": model.version,
                "features": record,
                "score": score,
                "label": label,
                "latency_ms": seconds_per_row * 1000.0,
            }
            for row, record, score, label in sorted(self.rows, key=lambda r: r[0])
        ]
        with engine.begin() as conn:
            conn.execute(store.predictions.insert(), rows)
        return len(rows)


@dataclass
class Result:
    engine: str
    input: str
    output: str
    rejects: str
    model_name: str
    model_version: str
    model_alias: str | None
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process during the run (every thread; the local engine)
    unseen_categories: dict[str, int] = field(default_factory=dict)
    monitor_sampled: int = 0
    mlflow_run_id: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"scored {self.rows_in:,} rows with {self.model_name} v{self.model_version} ({self.engine}) in "
            f"{self.seconds:.2f} s ({self.rows_per_second:,.0f} rows/s"
            + (f", {self.cpu_seconds:.2f} CPU-s" if self.cpu_seconds else "")
            + f"): {self.rows_out:,} written to "
            f"{self.output}, {self.rows_rejected:,} rejected"
            + (f" (reasons in {self.rejects})" if self.rows_rejected else "")
            + (f"; {self.monitor_sampled} sampled for the monitor" if self.monitor_sampled else "")
        )


def score_local(
    settings: ScoreSettings, model: ScoringModel, source: Source, output: Path, rejects: Path
) -> Result:
    """Stream `source` through the fast path into `output` (and `rejects`)."""
    scorer = model.scorer(settings.keys)
    result = Result(
        "local", str(source.path), str(output), str(rejects), model.name, model.version, model.alias
    )
    sample = MonitorSample(settings.monitor_sample)
    progress = Progress(source.total_rows, settings.progress_seconds)
    started, cpu_started = time.perf_counter(), time.process_time()
    out = Writer(output, output_schema(source.schema, settings.keys), [LABEL, MODEL_NAME, MODEL_VERSION])
    rej = Writer(rejects, reject_schema(settings.keys, model.specs))

    def handle(batch: pa.RecordBatch, first_row: int, scored, rejected, prepared: Prepared) -> None:
        out.write(scored)
        if rejected is not None:
            rej.write(rejected)
            result.rows_rejected += rejected.num_rows
        for name, count in prepared.unseen.items():
            result.unseen_categories[name] = result.unseen_categories.get(name, 0) + count
        sample.offer(scorer, batch, prepared, first_row)
        result.rows_in += batch.num_rows
        result.rows_out += scored.num_rows
        progress.tick(result.rows_in, result.rows_rejected)

    # SCORE_THREADS batches are scored at once (numpy, Arrow and XGBoost release the GIL), written
    # in input order; at most SCORE_THREADS + 1 batches are held, so memory stays flat
    pending: deque = deque()
    first_row = 0
    try:
        with ThreadPoolExecutor(settings.threads, thread_name_prefix="score") as pool:
            for batch in source.batches(settings.batch_rows):
                pending.append((batch, first_row, pool.submit(scorer.score, batch, first_row)))
                first_row += batch.num_rows
                if len(pending) > settings.threads:
                    b, r, future = pending.popleft()
                    handle(b, r, *future.result())
            while pending:
                b, r, future = pending.popleft()
                handle(b, r, *future.result())
    except BaseException:
        out.abort()
        rej.abort()
        raise
    out.commit()
    rej.commit()
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    if settings.monitor_sample:
        result.monitor_sampled = sample.write(
            settings.database_url, model, result.seconds / max(result.rows_in, 1)
        )
    return result


def log_run(settings: ScoreSettings, result: Result, model_run_id: str | None) -> str:
    """The run in MLflow (experiment SCORE_EXPERIMENT): what was scored, with what, how many, how fast."""
    import mlflow

    experiment_id = registry.configure(settings.tracking_uri, settings.experiment, settings.artifact_root)
    name = f"score {result.model_name} v{result.model_version}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        mlflow.log_params(
            {
                "engine": result.engine,
                "input": result.input,
                "output": result.output,
                "rejects": result.rejects,
                "keys": ",".join(settings.keys),
                "model_name": result.model_name,
                "model_version": result.model_version,
                "model_alias": result.model_alias or "",
                "batch_rows": settings.batch_rows,
                "spark_master": settings.spark_master if result.engine == "spark" else "",
            }
        )
        mlflow.log_metrics(
            {
                "rows_in": result.rows_in,
                "rows_out": result.rows_out,
                "rows_rejected": result.rows_rejected,
                "seconds": result.seconds,
                "cpu_seconds": result.cpu_seconds,
                "rows_per_second": result.rows_per_second,
                "monitor_sampled": result.monitor_sampled,
                **{f"unseen_{k}": v for k, v in result.unseen_categories.items()},
            }
        )
        mlflow.set_tags(
            {
                "churnops.kind": "batch-score",
                "model_version": result.model_version,
                "model_run_id": model_run_id or "",
            }
        )
        return run.info.run_id
