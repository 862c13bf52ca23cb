"""`python -m scoring` (`make score INPUT=... OUTPUT=...`): score a whole table with a registered model.

    python -m scoring --input customers.parquet --output scores.parquet [--keys customer_id]
                      [--model champion|challenger|7] [--engine local|spark] [--rejects FILE]

Every option falls back to its SCORE_* variable (docs/settings.md). Exit codes: 0 scored; 2 the command
cannot start (a bad setting, no such input, an unknown format, a column set that does not fit the
model, an unknown alias or version): one line on stderr, before any row is read; 1 the run failed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from core import registry
from core.logs import setup_logging
from core.settings import load_or_exit
from scoring.job import InputError, log_run, open_source, rejects_path, score_local, table_format
from scoring.model import ModelError, describe, load
from scoring.settings import ScoreSettings, is_uri, local_path
from scoring.table import ColumnError

log = logging.getLogger("scoring")


def parse(argv: list[str] | None) -> dict[str, str]:
    parser = argparse.ArgumentParser(prog="python -m scoring", description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="table to score (.csv, .parquet, Parquet folder); SCORE_INPUT")
    parser.add_argument("--output", help="scores (.parquet or .csv); SCORE_OUTPUT")
    parser.add_argument("--rejects", help="rejected rows with their reasons (CSV); SCORE_REJECTS")
    parser.add_argument("--keys", help="comma-separated key columns copied to the output; SCORE_KEYS")
    parser.add_argument("--model", help="registry alias or version number; SCORE_MODEL")
    parser.add_argument("--engine", help="local or spark; SCORE_ENGINE")
    args = parser.parse_args(argv)
    return {k: v for k, v in vars(args).items() if v not in (None, "")}


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    settings = load_or_exit(ScoreSettings, **parse(argv))
    setup_logging(settings.log_level, settings.log_format)
    if not settings.input or not settings.output:
        return fail("name the table to score and the output: make score INPUT=... OUTPUT=...", 2)
    if not settings.keys:
        return fail("SCORE_KEYS is empty: name the key column(s) to copy to the output (KEYS=...)", 2)
    registry.connect(settings.tracking_uri)
    try:
        described = describe(settings.model_name, settings.model)
    except ModelError as exc:
        return fail(str(exc), 2)
    except Exception as exc:  # noqa: BLE001 - the registry cannot be asked: one line, exit 1
        return fail(f"registry {settings.tracking_uri}: {type(exc).__name__}: {exc}", 1)
    spark = settings.engine == "spark"
    try:
        if spark:
            rejects = settings.rejects or settings.output.rstrip("/") + ".rejects.csv"
            source = None
            if not is_uri(settings.input):
                source = open_source(local_path(settings.input), settings.keys, described)
        else:
            source = open_source(local_path(settings.input), settings.keys, described)
            output = local_path(settings.output)
            table_format(output)
            rejects_file = (
                local_path(settings.rejects) if settings.rejects else rejects_path(settings, output)
            )
            if output.resolve() == source.path.resolve():
                raise InputError(f"{output}: the output would overwrite the input")
    except (InputError, ColumnError) as exc:
        return fail(str(exc), 2)
    try:
        model = load(
            described, threads=1
        )  # one XGBoost thread per batch: the engines run batches in parallel
    except ModelError as exc:
        return fail(str(exc), 1)
    if spark:
        try:
            from scoring.spark import score_spark
        except ImportError as exc:
            return fail(f"ENGINE=spark needs pyspark ({exc}): make install-spark", 2)
        try:
            result = score_spark(settings, model, rejects)
        except ColumnError as exc:
            return fail(str(exc), 2)
    else:
        result = score_local(settings, model, source, output, rejects_file)
    result.mlflow_run_id = log_run(settings, result, model.run_id)
    print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
