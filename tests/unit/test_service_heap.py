"""The service's processes freeze what lives as long as they do (model_service/heap.py): a full garbage
collection then walks only what requests left, instead of the ~364k objects of the loaded libraries and
model (80-400 ms with the GIL held, measured). A reload thaws and collects the previous model's objects."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

from model_service import heap
from model_service import served_model as service_model
from model_service.settings import ServiceSettings


class Node:
    pass


def test_frozen_objects_escape_full_collections_until_the_next_settle():
    cycle = Node()
    cycle.me = cycle  # freed only by the collector, never by reference counting
    ref = weakref.ref(cycle)
    try:
        heap.settle_heap()
        assert gc.get_freeze_count() > 0
        del cycle
        gc.collect()  # a full collection: the frozen cycle is not walked
        assert ref() is not None
        heap.settle_heap()  # the next load thaws and collects it, then freezes what lives
        assert ref() is None
    finally:
        gc.unfreeze()


def test_a_model_load_settles_the_heap(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(service_model, "settle_heap", lambda: calls.append("settled") or 0.01)
    settings = ServiceSettings.from_env(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    manager = service_model.ModelManager(settings)
    loaded = SimpleNamespace(
        name="telco-churn",
        version="4",
        metadata={},
        predictor=SimpleNamespace(kind="numpy"),
        fast_path_note="",
    )
    monkeypatch.setattr(manager, "_resolve", lambda: SimpleNamespace(version="4", run_id="r", tags={}))
    monkeypatch.setattr(manager, "_load", lambda version, run_id, tags=None: loaded)
    assert manager.check()["changed"] is True and calls == ["settled"]
    assert manager.check()["changed"] is False and calls == ["settled"]  # nothing loaded: nothing settled
    manager.check(force=True)
    assert calls == ["settled", "settled"]
