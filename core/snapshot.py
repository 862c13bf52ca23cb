"""Reading the data set's snapshots (`DATA_DIR/snapshots/<hash>/`, written by training.data): shared by
training (its data, a retrain's base) and the monitor, which counts the labelled records a retrain
would add to the champion's data (core.newdata).

A snapshot is a folder with `data.parquet` and `manifest.json` (rows, columns, hash, source, parent
snapshot, creation time); `DATA_DIR/LATEST-<name>` names the newest snapshot of a data set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from core.dataset import DatasetConfig
from core.source import DataError


@dataclass(frozen=True)
class Snapshot:
    hash: str
    path: Path
    manifest: dict

    @property
    def data_file(self) -> Path:
        return self.path / "data.parquet"

    def load(self) -> pd.DataFrame:
        return pd.read_parquet(self.data_file)


def open_snapshot(ref: str, data_dir: Path) -> Snapshot:
    folder = data_dir / "snapshots" / ref[:16]
    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        raise DataError(f"no snapshot '{ref}' under {data_dir / 'snapshots'}")
    manifest = json.loads(manifest_file.read_text())
    return Snapshot(hash=manifest["hash"], path=folder, manifest=manifest)


def lineage_root(snapshot: Snapshot) -> Snapshot:
    """The snapshot ingested from the source that `snapshot` descends from (itself when ingested):
    retrains write children (base + production records) with the base as `parent`."""
    data_dir = snapshot.path.parent.parent
    seen = set()
    while snapshot.manifest.get("parent") and snapshot.hash not in seen:
        seen.add(snapshot.hash)
        try:
            snapshot = open_snapshot(snapshot.manifest["parent"], data_dir)
        except DataError:
            break
    return snapshot


def latest_snapshot(config: DatasetConfig, data_dir: Path) -> Snapshot:
    pointer = data_dir / f"LATEST-{config.name}"
    if not pointer.is_file():
        raise DataError(f"no snapshot of '{config.name}' yet: run `make ingest` first")
    return open_snapshot(pointer.read_text().strip(), data_dir)


def champion_snapshot(data_hash: str | None, config: DatasetConfig, data_dir: Path) -> Snapshot:
    """The snapshot the champion was trained on (its `data_hash` tag), the latest one when there is no
    champion or no tag; DataError when neither is there."""
    return open_snapshot(data_hash, data_dir) if data_hash else latest_snapshot(config, data_dir)


@lru_cache(maxsize=2)
def _frame(data_file: Path, hash_: str) -> pd.DataFrame:
    return pd.read_parquet(data_file)


def cached_frame(snapshot: Snapshot) -> pd.DataFrame:
    """The snapshot's rows, read once per process (snapshots are immutable; a check every few minutes
    reads the champion's data once). Not to be modified."""
    try:
        return _frame(snapshot.data_file, snapshot.hash)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise DataError(f"snapshot {snapshot.hash[:16]} not readable: {exc}") from exc
