"""A generated data set with missing values, for the tests of issue 12 ("missing values stay missing").

`write_dataset(folder)` writes `accounts.csv` (1,500 rows: two numeric and two categorical features,
missing values in one numeric column, `balance`, and one categorical column, `region`) and its config
`accounts.yaml`. Missingness predicts the label: a record without `region` or `balance` is much more
likely to be positive, so a pipeline that drops or garbles missing values loses signal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROWS = 1500
REGIONS = ["north", "south", "east", "west"]
PLANS = ["basic", "plus", "premium"]

CONFIG = """\
name: accounts
description: generated accounts with missing values (tests/support/missing_data.py)
model_name: {model_name}
source: {{kind: csv, path: accounts.csv, license: "generated"}}
drop_columns: [account_id]
target: closed
positive_class: "yes"
features:
  age:     {{type: numeric, min: 18, max: 90}}
  balance: {{type: numeric, min: 0, max: 20000, max_missing_share: 0.2}}
  plan:    {{type: categorical, categories: [basic, plus, premium]}}
  region:  {{type: categorical, categories: [north, south, east, west], max_missing_share: 0.2}}
validation:
  min_rows: 500
  max_duplicate_share: 0.01
  label_share: {{min: 0.1, max: 0.7}}
cleaning:
  rare_category_min_frequency: 0.01
costs: {{false_positive: 1, false_negative: 3}}
segments: [plan, region]
gate:
  floors: {{roc_auc: 0.70}}
  max_regression: {{roc_auc: 0.05}}
  latency_p95_ms: 200
  fairness:
    columns: [plan]
    max_gap: {{recall: 0.5}}
    min_segment_rows: 30
example_record: {{age: 41, balance: null, plan: plus, region: null}}
"""


def generate(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, rows)
    balance = np.round(rng.gamma(2.0, 1500.0, rows).clip(0, 20000), 2)
    plan = rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2])
    region = rng.choice(REGIONS, rows).astype(object)
    no_region = rng.random(rows) < 0.12
    no_balance = rng.random(rows) < 0.10
    logit = (
        -1.6
        + 0.02 * (age - 50)
        - 0.0002 * (balance - 3000)
        + np.where(plan == "premium", -0.8, 0.0)
        + 2.2 * no_region
        + 1.8 * no_balance
    )
    closed = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    region[no_region] = None
    return pd.DataFrame(
        {
            "account_id": np.arange(1, rows + 1),
            "age": age,
            "balance": np.where(no_balance, np.nan, balance),
            "plan": plan,
            "region": region,
            "closed": np.where(closed, "yes", "no"),
        }
    )


def write_dataset(folder: Path, rows: int = ROWS, model_name: str = "accounts-model") -> Path:
    """The CSV and its config in `folder`; returns the config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    generate(rows).to_csv(folder / "accounts.csv", index=False)
    config = folder / "accounts.yaml"
    config.write_text(CONFIG.format(model_name=model_name))
    return config
