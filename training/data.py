"""Ingestion: read the configured source once, write an immutable snapshot named by its content hash.

A snapshot is a folder `DATA_DIR/snapshots/<hash>/` with `data.parquet` and `manifest.json`
(rows, columns, hash, source, parent snapshot, creation time). Files are written once and made
read-only; ingesting the same content again returns the existing snapshot. `DATA_DIR/LATEST-<name>`
names the newest snapshot of a data set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.dataset import ConfigError, DatasetConfig, load_config
from core.features import prepare
from core.logs import setup_logging
from core.settings import load_or_exit

# reading snapshots lives in core.snapshot (the monitor reads the champion's data too); re-exported
from core.snapshot import Snapshot as Snapshot
from core.snapshot import latest_snapshot as latest_snapshot
from core.snapshot import lineage_root as lineage_root
from core.snapshot import open_snapshot as open_snapshot
from core.source import DataError as DataError
from core.source import content_hash
from core.source import read_source as read_source
from training.settings import TrainingSettings

log = logging.getLogger("training.data")  # not __name__: `python -m` runs this as __main__


def write_snapshot(
    frame: pd.DataFrame,
    config: DatasetConfig,
    data_dir: Path,
    *,
    parent: str | None = None,
    note: str = "",
) -> Snapshot:
    frame = frame.reset_index(drop=True)
    digest = content_hash(frame)
    folder = data_dir / "snapshots" / digest[:16]
    if not (folder / "manifest.json").is_file():
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(tmp / "data.parquet", index=False)
        manifest = {
            "dataset": config.name,
            "hash": digest,
            "rows": int(len(frame)),
            "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
            "source": config.source,
            "parent": parent,
            "note": note,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o444)
        try:
            tmp.rename(folder)
        except OSError:  # another process wrote the same content first: theirs is identical
            for f in tmp.iterdir():
                f.chmod(0o644)
                f.unlink()
            tmp.rmdir()
    (data_dir / f"LATEST-{config.name}").write_text(digest[:16] + "\n")
    return open_snapshot(digest[:16], data_dir)


def ingest(config: DatasetConfig, data_dir: Path) -> Snapshot:
    return write_snapshot(read_source(config), config, data_dir, note="ingested from source")


SPLITS = ("train", "valid", "test")


def assign_split(features: pd.DataFrame, valid_share: float, test_share: float) -> np.ndarray:
    """Stable split by a hash of each row's feature values.

    A row keeps its side whatever else is in the data set, so the test set of v1 stays the test set
    when production records are added for a retrain, and identical rows never straddle train and test.
    """
    hashes = pd.util.hash_pandas_object(features.reset_index(drop=True), index=False).to_numpy()
    bucket = (hashes % np.uint64(10_000)).astype(np.float64) / 10_000.0
    return np.where(
        bucket < test_share, "test", np.where(bucket < test_share + valid_share, "valid", "train")
    )


@dataclass
class Splits:
    """Features and labels per side of the split (`SPLITS`)."""

    X: dict[str, pd.DataFrame]
    y: dict[str, pd.Series]

    def sizes(self) -> dict[str, int]:
        return {side: len(labels) for side, labels in self.y.items()}


@dataclass(frozen=True)
class TrainingData:
    """A validated snapshot, split: what one training run is fitted and measured on."""

    config: DatasetConfig
    snapshot: Snapshot
    rows: int
    splits: Splits
    validation_report: Path  # the JSON report of training.validate, logged with the run
    negative_class: str = ""  # the target's other value (validation checked there are two)


def split_data(frame: pd.DataFrame, config: DatasetConfig) -> Splits:
    features, label = prepare(frame, config)
    side = assign_split(features, config.split["valid_share"], config.split["test_share"])
    return Splits(
        X={s: features[side == s].reset_index(drop=True) for s in SPLITS},
        y={s: label[side == s].reset_index(drop=True) for s in SPLITS},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__)
    parser.add_argument(
        "command", choices=["ingest", "show"], help="ingest the source, or show the latest snapshot"
    )
    args = parser.parse_args(argv)
    settings = load_or_exit(TrainingSettings)
    setup_logging(settings.log_level, settings.log_format, plain="training")
    try:
        config = load_config(settings.dataset_config)
        snap = (
            ingest(config, settings.data_dir)
            if args.command == "ingest"
            else latest_snapshot(config, settings.data_dir)
        )
    except (ConfigError, DataError) as exc:
        log.error("error: %s", exc)
        return 2
    log.info("snapshot %s  rows=%s  path=%s", snap.hash[:16], snap.manifest["rows"], snap.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
