"""A retrain after "new data: the source changed" trains on the new source: the base is a new ingestion
when the source's content differs from the champion's root snapshot (retrain.on_source_change), and the
champion's root otherwise. The champion is stubbed (its `data_hash` tag is all retrain reads)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pandas as pd
import pytest

from core import registry
from core.dataset import load_config
from tests.support.missing_data import write_dataset
from training import retrain
from training.data import ingest, write_snapshot
from training.settings import TrainingSettings


@pytest.fixture
def setup(tmp_path, monkeypatch):
    config = load_config(write_dataset(tmp_path / "data"))
    config = dataclasses.replace(config, retrain={"new_labels": 0, "on_source_change": True})
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "snapshots"))
    settings = TrainingSettings.from_env()
    root = ingest(config, settings.data_dir)
    # the champion was trained on a retrain snapshot (root + production rows) whose parent is the root
    child = write_snapshot(
        pd.concat([root.load(), root.load().head(3)], ignore_index=True),
        config,
        settings.data_dir,
        parent=root.hash,
    )
    champ = SimpleNamespace(version="2", tags={"data_hash": child.hash})
    monkeypatch.setattr(registry, "version_by_alias", lambda name, alias, client=None: champ)
    return settings, config, root


def test_an_unchanged_source_keeps_the_champions_root(setup):
    settings, config, root = setup
    base, changed = retrain.current_base(settings, config)
    assert base.hash == root.hash and not changed


def test_a_changed_source_is_the_new_base(setup):
    settings, config, root = setup
    path = config.source["path"]
    pd.read_csv(path).iloc[:-10].to_csv(path, index=False)
    base, changed = retrain.current_base(settings, config)
    assert changed and base.hash != root.hash and base.manifest["rows"] == root.manifest["rows"] - 10
    # switched off in the config: the champion's root, as before
    off = dataclasses.replace(config, retrain={"new_labels": 0, "on_source_change": False})
    base, changed = retrain.current_base(settings, off)
    assert base.hash == root.hash and not changed


def test_training_tags_the_snapshot_lineage(setup):
    settings, config, root = setup
    from training import tracking
    from training.data import open_snapshot

    champ = registry.version_by_alias("m", registry.CHAMPION)
    child = open_snapshot(champ.tags["data_hash"], settings.data_dir)
    tags = tracking.run_tags(SimpleNamespace(snapshot=child, config=config), "abc")
    # the monitor compares the source's hash now with source_hash: the root, not the retrain snapshot
    assert tags["source_hash"] == root.hash and tags["data_parent"] == root.hash
    assert tags["data_hash"] == child.hash != root.hash
    first = tracking.run_tags(SimpleNamespace(snapshot=root, config=config), "abc")
    assert first["source_hash"] == root.hash and first["data_parent"] == ""
