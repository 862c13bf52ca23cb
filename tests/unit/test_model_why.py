"""Why a model version exists: the retrain's trigger, figures and data lineage (registry.WHY_TAGS)
travel from the model version's tags to GET /v1/model's `why`; other tags stay out."""

from __future__ import annotations

from types import SimpleNamespace

from core import registry
from model_service import served_model as service_model
from model_service.settings import ServiceSettings

TAGS = {
    "retrain_trigger": "drift,new data",
    "retrain_reason": "drift share 0.4 >= 0.1; new data: 600 labelled records since v3 was trained",
    "retrain_new_labels": "600",
    "retrain_source_changed": "false",
    "data_snapshot": "abcd" * 4,
    "data_parent": "ef01" * 16,
    "source_hash": "ef01" * 16,
    "monitoring_run_id": "",  # empty: left out
    "gate": "passed",  # not a why tag
}


def test_why_keeps_the_lineage_and_trigger_tags_only():
    why = registry.why(TAGS)
    assert why["retrain_trigger"] == "drift,new data" and why["source_hash"] == "ef01" * 16
    assert "gate" not in why and "monitoring_run_id" not in why
    assert registry.why(None) == {}


def test_the_service_shows_why_its_model_version_exists(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "model_metadata", lambda name, version: {"threshold": 0.4})
    fake_mlflow = SimpleNamespace(sklearn=SimpleNamespace(load_model=lambda uri: "pipeline"))
    monkeypatch.setattr(service_model, "mlflow", fake_mlflow)
    built = {}

    def fake_build(name, version, alias, pipeline, metadata, run_id, fast_path):
        built.update(metadata=metadata)
        return service_model.LoadedModel.__new__(service_model.LoadedModel)

    monkeypatch.setattr(service_model, "build_loaded_model", fake_build)
    settings = ServiceSettings.from_env(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    manager = service_model.ModelManager(settings)
    manager._load("4", "run-4", TAGS)
    assert built["metadata"]["why"] == registry.why(TAGS)
    assert built["metadata"]["threshold"] == 0.4
    served = SimpleNamespace(
        name="telco-churn",
        version="4",
        alias="champion",
        run_id="run-4",
        threshold=0.4,
        metadata=built["metadata"],
        predictor=SimpleNamespace(kind="numpy"),
        fast_path_note="",
        loaded_at="now",
        explainer=None,
        explain_note="",
    )
    assert service_model.LoadedModel.describe(served)["why"]["retrain_trigger"] == "drift,new data"
