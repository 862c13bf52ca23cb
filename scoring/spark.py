"""The same scoring job on Apache Spark (`make score ENGINE=spark`, `SPARK_MASTER`).

The driver resolves the model in the registry and compiles it exactly as the in-process engine does
(`scoring.model`); the compiled `BatchScorer` travels to the executors inside the function Spark runs
through `DataFrame.mapInArrow`, so every executor scores its Arrow record batches with the same code and
the same numbers as `make score` in process (and the service's fast path). Executors need the
project's Python packages (`core`, `scoring`) and its pinned dependencies, not the registry: see
docs/scaling.md for `spark-submit` on a cluster.

One pass over the input yields scored and rejected rows in one frame (a `reason` column, null for a
scored row), cached and written as two outputs: the scores (the same columns as in process) and the
rejects (the reason, the keys and the feature values as text; Spark has no global row number, so the
keys name a rejected row). Output paths are folders of part files, as Spark writes them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from scoring.job import MonitorSample, Result
from scoring.model import ScoringModel
from scoring.settings import ScoreSettings, is_uri, local_path
from scoring.table import (
    LABEL,
    MODEL_NAME,
    MODEL_VERSION,
    PROBABILITY,
    REASON,
    BatchScorer,
    check_columns,
)


def session(settings: ScoreSettings, app: str):
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(app)
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.batch_rows))
        .config("spark.ui.showConsoleProgress", "true" if settings.progress_seconds > 0 else "false")
    )
    if settings.spark_master.startswith("local"):
        # local executors run this interpreter (its venv holds the project): pyspark's context takes
        # it from PYSPARK_PYTHON, exported here; a cluster's come from spark-submit's
        # --conf spark.pyspark.python (docs/scaling.md)
        os.environ["PYSPARK_PYTHON"] = sys.executable
        builder = builder.master(settings.spark_master).config("spark.pyspark.python", sys.executable)
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
    else:
        builder = builder.master(settings.spark_master)
    return builder.getOrCreate()


def location(value: str) -> str:
    return value if is_uri(value) else str(local_path(value))


def read(spark, path: str):
    lower = path.lower()
    if lower.endswith((".csv", ".csv.gz")):
        # every column as text, as the in-process engine reads CSV; scoring.table parses the numbers
        return spark.read.option("header", True).option("inferSchema", False).csv(path), "csv"
    return spark.read.parquet(path), "parquet"


def map_function(scorer: BatchScorer, feature_names: list[str]):
    """The function each executor runs: a stream of record batches -> scored and rejected rows."""

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if not batch.num_rows:
                continue
            scored, rejected, _ = scorer.score(batch)
            n = scored.num_rows
            columns = [*scored.columns, pa.nulls(n, pa.string())]
            columns += [pa.nulls(n, pa.string()) for _ in feature_names]
            yield pa.RecordBatch.from_arrays(columns, names=[*scored.schema.names, REASON, *feature_names])
            if rejected is not None:
                take = pc.cast(rejected.column("row"), pa.int64())
                m = rejected.num_rows
                keys = [batch.column(k).take(take) for k in scorer.keys]
                columns = [
                    *keys,
                    pa.nulls(m, pa.float64()),
                    pa.nulls(m, pa.int64()),
                    pa.nulls(m, pa.string()),
                    pa.nulls(m, pa.string()),
                    rejected.column(REASON),
                    *[pc.cast(batch.column(f).take(take), pa.string()) for f in feature_names],
                ]
                yield pa.RecordBatch.from_arrays(
                    columns, names=[*scored.schema.names, REASON, *feature_names]
                )

    return score_batches


def score_spark(settings: ScoreSettings, model: ScoringModel, rejects: str) -> Result:
    """Score SCORE_INPUT on SPARK_MASTER into SCORE_OUTPUT (a folder), rejects into `rejects`."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    source, output = location(settings.input), location(settings.output)
    spark = session(settings, f"churnops-score-{model.name}-v{model.version}")
    try:
        frame, fmt = read(spark, source)
        keys = settings.keys
        features = [s.name for s in model.specs]
        check_columns(arrow_schema(frame.schema), model.specs, keys)  # before any work
        frame = frame.select(*dict.fromkeys([*keys, *features]))
        key_fields = [frame.schema[k] for k in keys]
        text_features = [f for f in features if f not in keys]
        out_schema = StructType(
            [
                *key_fields,
                StructField(PROBABILITY, DoubleType()),
                StructField(LABEL, LongType()),
                StructField(MODEL_NAME, StringType()),
                StructField(MODEL_VERSION, StringType()),
                StructField(REASON, StringType()),
                *[StructField(f, StringType()) for f in text_features],
            ]
        )
        scorer = model.scorer(keys)
        started = time.perf_counter()
        mapped = frame.mapInArrow(map_function(scorer, text_features), out_schema).cache()
        scored = mapped.filter(F.col(REASON).isNull()).select(
            *keys, PROBABILITY, LABEL, MODEL_NAME, MODEL_VERSION
        )
        rejected = mapped.filter(F.col(REASON).isNotNull()).select(REASON, *keys, *text_features)
        writer = scored.write.mode("overwrite")
        if output.lower().endswith((".csv", ".csv.gz")):
            writer.option("header", True).csv(output)
        else:
            writer.parquet(output)
        rejected.write.mode("overwrite").option("header", True).csv(rejects)
        counts = mapped.select(
            F.count(F.lit(1)).alias("rows"), F.count(F.col(REASON)).alias("rejected")
        ).first()
        result = Result(
            "spark",
            source,
            output,
            rejects,
            model.name,
            model.version,
            model.alias,
            rows_in=int(counts["rows"]),
            rows_rejected=int(counts["rejected"]),
        )
        result.rows_out = result.rows_in - result.rows_rejected
        result.seconds = time.perf_counter() - started
        if settings.monitor_sample:
            result.monitor_sampled = monitor_sample(settings, model, scorer, frame, result)
        mapped.unpersist()
        return result
    finally:
        spark.stop()


def arrow_schema(spark_schema: Any) -> pa.Schema:
    """A Spark schema as the Arrow schema its record batches carry (for `check_columns`)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(spark_schema)


def monitor_sample(
    settings: ScoreSettings, model: ScoringModel, scorer: BatchScorer, frame, result: Result
) -> int:
    """A uniform sample of the input rows, scored on the driver by the same scorer, to the monitor's table."""
    fraction = min(1.0, 2.0 * settings.monitor_sample / max(result.rows_in, 1))
    rows = frame.sample(fraction=fraction, seed=0).limit(settings.monitor_sample * 2).toArrow()
    sample = MonitorSample(settings.monitor_sample)
    first = 0  # the sample's own row numbers (Spark has no global one)
    for batch in rows.to_batches():
        _, _, prepared = scorer.score(batch, first)
        sample.offer(scorer, batch, prepared, first)
        first += batch.num_rows
    return sample.write(settings.database_url, model, result.seconds / max(result.rows_in, 1))
