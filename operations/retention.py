"""The prediction log's retention, now: `churnops retention [--days N] [--dry-run]` (`make retention`).

Archives every UTC day of `predictions`, `shadow_predictions` and `feedback` entirely older than
LOG_RETENTION_DAYS (or `--days`) to LOG_ARCHIVE_URI as day-partitioned Parquet, then deletes those rows
from DATABASE_URL in batches of LOG_RETENTION_BATCH_SIZE (core.retention; the monitor loop runs the same
job once a day). Safe to run again at any time, also after a run that was killed. `--dry-run` prints
how many rows each table holds past the window and exits. Exit 2 with one line when retention is off
(LOG_RETENTION_DAYS=0 and no --days) or a setting is invalid.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import func, select

from core import retention, store
from core.logs import setup_logging
from core.settings import Settings, load_or_exit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="churnops retention", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, help="the window in days (default: LOG_RETENTION_DAYS)")
    parser.add_argument("--dry-run", action="store_true", help="count the rows past the window only")
    args = parser.parse_args(argv)
    settings = load_or_exit(Settings)
    setup_logging(settings.log_level, settings.log_format)
    days = settings.log_retention_days if args.days is None else args.days
    if days <= 0:
        print("error: retention is off (LOG_RETENTION_DAYS=0): give --days N", file=sys.stderr)
        return 2
    engine = store.engine_for(settings.database_url)
    if args.dry_run:
        before = retention.cutoff(days)
        for name, (table, column) in retention.tables().items():
            with engine.connect() as conn:
                n = conn.execute(select(func.count()).where(table.c[column] < before)).scalar_one()
            print(
                f"{name}: {n} rows before {before:%Y-%m-%d} (would be archived to {settings.log_archive_uri})"
            )
        return 0
    result = retention.run_retention(
        engine, retention.archive_store(settings), days, batch=settings.log_retention_batch
    )
    print(result.line(), f"-> {settings.log_archive_uri}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
