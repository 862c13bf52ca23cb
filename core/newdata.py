"""What a retrain would add: the rules that turn labelled production records into new rows of the data
set, shared by the retrain (training.retrain builds its data with them) and the monitor (its new-data
count, monitoring.check.check_freshness, counts what a retrain would add, not every label).

Left out, and counted by reason:
- records outside the declared schema (an unseen category, a value out of range; `to_raw`);
- records identical (features and label) to a row already in the data or to an earlier record
  (replayed held-out records add nothing new);
- records with a missing value the config does not allow: in a feature without `max_missing_share`, or
  beyond it (`within_missing_shares`: the new data keeps every column within its declared share, so it
  passes validation; records are kept oldest first until a column's share is used up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.dataset import DatasetConfig
from core.features import category_string
from core.source import DataError

SCHEMA_LEFT_OUT = "outside the declared schema"
DUPLICATE_LEFT_OUT = "already in the data (same features and label)"
MISSING_LEFT_OUT = "with a missing value beyond the declared max_missing_share"


@dataclass
class NewRows:
    """The raw rows a retrain would add to `base` from labelled records, and what it leaves out."""

    rows: pd.DataFrame
    labelled: int  # the labelled records looked at
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> records

    @property
    def added(self) -> int:
        return len(self.rows)

    def left_out_text(self) -> str:
        return "; ".join(f"{n} {why}" for why, n in self.left_out.items() if n)


def negative_class(base: pd.DataFrame, config: DatasetConfig):
    values = [v for v in base[config.target].dropna().unique() if str(v) != str(config.positive_class)]
    if len(values) != 1:
        raise DataError(f"cannot tell the negative class of '{config.target}' from the base data: {values}")
    return values[0]


def to_raw(
    records: pd.DataFrame, base: pd.DataFrame, config: DatasetConfig
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Production records (feature dicts + `__label__`) as raw rows of the data set, schema-checked."""
    left_out = {SCHEMA_LEFT_OUT: 0}
    if records.empty:
        return base.iloc[0:0].copy(), left_out
    ok = pd.Series(True, index=records.index)
    for feature in config.features:
        col = records[feature.name] if feature.name in records else pd.Series(np.nan, index=records.index)
        present = col.notna()
        if feature.type == "categorical":
            ok &= ~present | col.astype(str).isin(feature.categories)
        else:
            num = pd.to_numeric(col, errors="coerce")
            ok &= ~present | num.notna()
            if feature.type == "binary":
                ok &= ~present | num.isin([0, 1])
            if feature.min is not None:
                ok &= ~present | (num >= feature.min)
            if feature.max is not None:
                ok &= ~present | (num <= feature.max)
    left_out[SCHEMA_LEFT_OUT] = int((~ok).sum())
    kept = records[ok]
    out = pd.DataFrame(index=range(len(kept)))
    positive, negative = config.positive_class, negative_class(base, config)
    for column in base.columns:
        dtype = base[column].dtype
        if column == config.target:
            out[column] = np.where(kept["__label__"].to_numpy() == 1, positive, negative)
        elif column in config.feature_names:
            values = (
                kept[column].reset_index(drop=True) if column in kept else pd.Series(np.nan, index=out.index)
            )
            if config.feature(column).type == "categorical":  # missing stays missing (None), not "None"
                out[column] = pd.Series(
                    [None if pd.isna(v) else category_string(v) for v in values],
                    index=out.index,
                    dtype=object,
                )
            else:
                num = pd.to_numeric(values, errors="coerce")
                if pd.api.types.is_integer_dtype(dtype) and (num.round() == num).all():
                    out[column] = num.round().astype(dtype)
                else:
                    out[column] = num.astype("float64")
        elif pd.api.types.is_numeric_dtype(dtype) and len(base):  # a row id: continue the numbering
            start = int(pd.to_numeric(base[column], errors="coerce").max()) + 1
            out[column] = np.arange(start, start + len(kept)).astype(dtype)
        else:
            out[column] = None
    return out, left_out


def within_missing_shares(base: pd.DataFrame, new: pd.DataFrame, config: DatasetConfig) -> np.ndarray:
    """Which `new` rows (in order) the snapshot base + kept rows can hold with every feature's share of
    missing values at most its `max_missing_share` (validation's rule). Complete rows are always kept;
    a row with missing values is kept while every column it lacks has room (0 share: never)."""
    names = [n for n in config.feature_names if n in new]
    missing = new[names].isna().to_numpy() if names else np.zeros((len(new), 0), dtype=bool)
    keep = ~missing.any(axis=1)
    total = len(base) + int(keep.sum())
    counts = np.array([int(base[n].isna().sum()) if n in base else 0 for n in names], dtype=np.int64)
    shares = np.array([config.feature(n).max_missing_share for n in names], dtype=np.float64)
    for i in np.flatnonzero(~keep):
        cols = missing[i]
        if ((counts[cols] + 1) <= shares[cols] * (total + 1) + 1e-9).all():
            keep[i] = True
            total += 1
            counts[cols] += 1
    return keep


def new_rows(records: pd.DataFrame, base: pd.DataFrame, config: DatasetConfig) -> NewRows:
    """The rows a retrain adds to `base` from `records` (feature dicts + `__label__`, oldest first):
    schema-checked (`to_raw`), without duplicates of the base or of an earlier record (features and
    label), within the declared missing shares (`within_missing_shares`)."""
    raw, left_out = to_raw(records, base, config)
    key = [*config.feature_names, config.target]
    combined = pd.concat([base[key], raw[key]], ignore_index=True)
    dup = combined.astype(str).duplicated(keep="first").to_numpy()[len(base) :]
    left_out[DUPLICATE_LEFT_OUT] = int(dup.sum())
    unique = raw[~dup].reset_index(drop=True)
    within = within_missing_shares(base, unique, config)
    left_out[MISSING_LEFT_OUT] = int((~within).sum())
    return NewRows(unique[within], labelled=len(records), left_out=left_out)
