"""Settings of batch scoring (docs/settings.md is generated from this class).

`make score INPUT=... OUTPUT=...` sets SCORE_INPUT and SCORE_OUTPUT; every other variable has a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from core.settings import CommaList, RepoPath, Settings, env_field, repo_path


class ScoreSettings(Settings):
    """Batch scoring of whole tables (`make score`), in process or on Spark."""

    state_paths: ClassVar[dict[str, str]] = {"artifact_root": "mlflow/artifacts"}
    derived_defaults: ClassVar[dict[str, str]] = {
        **Settings.derived_defaults,
        "rejects": "OUTPUT's name + `.rejects.csv`, beside it",
    }

    input: str | None = env_field(
        "SCORE_INPUT",
        None,
        "the table to score: a `.csv` or `.parquet` file or a Parquet folder (ENGINE=spark: any path or "
        "URI Spark reads, e.g. `hdfs://`, `s3a://`)",
    )
    output: str | None = env_field(
        "SCORE_OUTPUT", None, "the scores: `.parquet` or `.csv` (ENGINE=spark writes a folder of part files)"
    )
    rejects: str | None = env_field(
        "SCORE_REJECTS", None, "the rows that fail the model's schema, with the reason for each (CSV)"
    )
    keys: CommaList = env_field(
        "SCORE_KEYS",
        ("customer_id",),
        "comma-separated key columns copied from the input to every output row (e.g. `customer_id`)",
    )
    model: str = env_field(
        "SCORE_MODEL",
        "champion",
        "the model version to score with: a registry alias (`champion`, `challenger`) or a version number",
        min_length=1,
    )
    engine: Literal["local", "spark"] = env_field(
        "SCORE_ENGINE", "local", "`local` (in process, Arrow record batches) or `spark` (pyspark)"
    )
    batch_rows: int = env_field(
        "SCORE_BATCH_ROWS", 65536, "rows per Arrow record batch (memory stays flat at a few batches)", ge=1
    )
    threads: int = env_field(
        "SCORE_THREADS", 2, "record batches the in-process engine scores at once (one thread each)", ge=1
    )
    progress_seconds: float = env_field(
        "SCORE_PROGRESS_SECONDS", 5.0, "a progress line on stderr at most this often (0: none)", ge=0
    )
    experiment: str = env_field(
        "SCORE_EXPERIMENT", "batch-scoring", "MLflow experiment of the scoring runs", min_length=1
    )
    artifact_root: RepoPath | None = env_field(
        "MLFLOW_ARTIFACT_ROOT", None, "artifact folder of a local (non-HTTP) tracking store"
    )
    monitor_sample: int = env_field(
        "SCORE_MONITOR_SAMPLE",
        0,
        "write a uniform sample of this many scored rows (inputs + scores) to the predictions table the "
        "monitor reads, so the batch is drift-checked like online traffic; 0: off",
        ge=0,
    )
    spark_master: str = env_field(
        "SPARK_MASTER", "local[2]", "Spark master URL of ENGINE=spark (`spark://host:7077`, `yarn`, ...)"
    )


def local_path(value: str) -> Path:
    """A path of the local engine: as given, relative ones taken from the repository root."""
    return repo_path(value)


def is_uri(value: str) -> bool:
    """`hdfs://...`, `s3a://...`, `file:/...`: a location Spark resolves, not a local path."""
    head, sep, _ = value.partition(":")
    return bool(sep) and len(head) > 1 and head.replace("+", "").isalnum()
