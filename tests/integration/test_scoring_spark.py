"""`make score ENGINE=spark` on a local Spark (local[2]): the same columns, values (1e-6) and rejects as
the in-process engine. pyspark comes from the project's `spark` extra (`make install-spark`, run here
when it is missing) and Java from tools/system_packages.sh (Debian default-jre-headless, as root); the
test skips, naming the reason, only when Java cannot be installed (and fails under CI)."""

from __future__ import annotations

import importlib
import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from core import store
from scoring.__main__ import main
from tests.conftest import REPO, require_server

pytestmark = [pytest.mark.slow, pytest.mark.spark]


@pytest.fixture(scope="module")
def spark_installed() -> None:
    if shutil.which("java") is None:
        subprocess.run(["bash", str(REPO / "tools" / "system_packages.sh")], cwd=REPO, check=False)
    if shutil.which("java") is None:
        require_server("no Java runtime and tools/system_packages.sh could not install one (not root?)")
    try:
        importlib.import_module("pyspark")
    except ImportError:
        done = subprocess.run(
            ["make", "install-spark"], cwd=REPO, capture_output=True, text=True, timeout=1200
        )
        assert done.returncode == 0, f"make install-spark failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        importlib.invalidate_caches()
        importlib.import_module("pyspark")


def _customers(served) -> pd.DataFrame:
    _, meta, test = served
    names = [f["name"] for f in meta["feature_schema"]]
    frame = test[names].reset_index(drop=True).head(800).copy()
    frame.insert(0, "customer_id", [f"cust-{i:05d}" for i in range(len(frame))])
    frame.loc[5, "tenure"] = 999
    frame.loc[11, "contract"] = None
    return frame


def _read(path) -> pd.DataFrame:
    return (
        pads.dataset(path, format="parquet")
        .to_table()
        .to_pandas()
        .sort_values("customer_id")
        .reset_index(drop=True)
    )


def test_spark_scores_like_the_in_process_engine(
    spark_installed, champion_env, served, tmp_path, monkeypatch
):
    monkeypatch.setenv("SPARK_MASTER", "local[2]")
    monkeypatch.setenv("SCORE_BATCH_ROWS", "300")  # several Arrow batches per task
    frame = _customers(served)
    frame.to_parquet(tmp_path / "customers.parquet")
    frame.to_csv(tmp_path / "customers.csv", index=False)
    local, spark = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    assert main(["--input", str(tmp_path / "customers.parquet"), "--output", str(local)]) == 0
    monkeypatch.setenv("SCORE_MONITOR_SAMPLE", "50")  # and a sample for the monitor, from Spark's rows
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'loop.db'}")
    args = ["--input", str(tmp_path / "customers.parquet"), "--output", str(spark), "--engine", "spark"]
    assert main(args) == 0
    monkeypatch.setenv("SCORE_MONITOR_SAMPLE", "0")
    engine = store.engine_for(f"sqlite:///{tmp_path / 'loop.db'}")
    window = store.recent_predictions(engine, champion_env.model_name, champion_env.version, 500, 0)
    assert len(window) == 50 and window["request_id"].str.startswith("batch-").all()

    expected, got = _read(local), _read(spark)
    assert (
        list(got.columns)
        == list(expected.columns)
        == ["customer_id", "probability", "label", "model_name", "model_version"]
    )
    assert got["customer_id"].tolist() == expected["customer_id"].tolist() and len(got) == 798
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-6)
    assert (got["label"] == expected["label"]).all() and (got["model_version"] == champion_env.version).all()
    local_rejects = pd.read_csv(f"{local}.rejects.csv")
    spark_rejects = pd.concat(
        pd.read_csv(p) for p in sorted((tmp_path / "spark.parquet.rejects.csv").glob("*.csv"))
    )
    assert sorted(spark_rejects["reason"]) == sorted(local_rejects["reason"])
    assert sorted(spark_rejects["customer_id"]) == ["cust-00005", "cust-00011"]

    # CSV in (every column read as text, as in process), CSV out
    csv_out = tmp_path / "spark.csv"
    assert (
        main(["--input", str(tmp_path / "customers.csv"), "--output", str(csv_out), "--engine", "spark"]) == 0
    )
    parts = sorted(csv_out.glob("part-*.csv"))
    from_csv = pd.concat(pd.read_csv(p, dtype={"model_version": str}) for p in parts)
    from_csv = from_csv.sort_values("customer_id").reset_index(drop=True)
    np.testing.assert_allclose(from_csv["probability"], expected["probability"], rtol=0, atol=1e-6)
    assert pq.read_schema(local).names == list(from_csv.columns)
