"""Retraining keeps production records with missing values as long as every column stays within its
declared `max_missing_share` (tests/support/missing_data.py's generated data set), and keeps them missing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.dataset import load_config
from tests.support.missing_data import generate, write_dataset
from training import retrain
from training.validate import validate


def _records(rows: list[dict], label: int = 1) -> pd.DataFrame:
    return pd.DataFrame([{**r, "__label__": label} for r in rows])


def test_records_within_the_declared_missing_shares_are_kept_missing(tmp_path):
    config = load_config(write_dataset(tmp_path))
    base = generate(600)
    # balance: 60 of 600 missing in the base; room for 0.2 * 700 - 60 = 80 more in 100 new rows
    complete = [
        {"age": 30 + i % 40, "balance": 100.0 + i, "plan": "plus", "region": "east"} for i in range(50)
    ]
    no_region = [{"age": 33, "balance": 500.0 + i, "plan": "basic", "region": None} for i in range(30)]
    no_balance = [
        {"age": 44 + i % 30, "balance": None, "plan": "premium", "region": "west"} for i in range(20)
    ]
    raw, left_out = retrain.to_raw(_records(complete + no_region + no_balance), base, config)
    assert left_out == {"outside the declared schema": 0}
    assert len(raw) == 100
    # a missing category is None in the raw row, never the string "None" or "nan"
    assert raw["region"].iloc[50:80].isna().all() and not raw["region"].isin(["None", "nan"]).any()
    assert raw["balance"].iloc[80:].isna().all()
    keep = retrain.within_missing_shares(base, raw, config)
    assert keep.all()
    assert validate(pd.concat([base, raw[keep]], ignore_index=True), config).ok


def test_records_beyond_the_declared_share_or_missing_a_required_feature_are_left_out(tmp_path):
    config = load_config(write_dataset(tmp_path))
    base = generate(600)
    base_missing = int(base["region"].isna().sum())
    no_region = [{"age": 50, "balance": float(i), "plan": "plus", "region": None} for i in range(200)]
    no_age = [{"age": None, "balance": 10.0, "plan": "plus", "region": "north"}]  # age allows no missing
    raw, _ = retrain.to_raw(_records(no_region + no_age), base, config)
    keep = retrain.within_missing_shares(base, raw, config)
    assert not keep[-1]
    kept = int(keep.sum())
    # as many as the share allows, oldest first: one more would break validation's rule
    assert (base_missing + kept) <= 0.2 * (len(base) + kept) < base_missing + kept + 1
    assert keep[:kept].all() and not keep[kept:].any()
    combined = pd.concat([base, raw[keep]], ignore_index=True)
    assert validate(combined, config).ok
    over = pd.concat([combined, raw[~keep].head(1)], ignore_index=True)
    assert any(f.rule == "missing" and f.column == "region" for f in validate(over, config).failures)


def test_a_record_with_a_missing_value_in_two_columns_needs_room_in_both(tmp_path):
    config = load_config(write_dataset(tmp_path))
    base = generate(100)
    base.loc[:, "balance"] = np.where(np.arange(100) < 20, np.nan, 1.0)  # balance's share already 20 %
    both = [{"age": 50, "balance": None, "plan": "plus", "region": None}]
    raw, _ = retrain.to_raw(_records(both), base, config)
    assert not retrain.within_missing_shares(base, raw, config).any()
