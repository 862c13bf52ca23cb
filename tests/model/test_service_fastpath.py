"""The numpy fast path equals `pipeline.predict_proba` on the whole held-out test split (1e-6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.fastpath import CompileError, PipelinePredictor, compile_pipeline, synthetic_records
from core.feature_schema import field_specs
from model_service.request_schema import RecordValidator
from model_service.served_model import build_loaded_model


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]


def _check(pipe, specs, X: pd.DataFrame):
    validator = RecordValidator(specs)
    compiled = compile_pipeline(pipe, specs)
    batch = validator.validate(_records(X))
    expected = pipe.predict_proba(X)[:, 1]
    np.testing.assert_allclose(compiled.predict(batch), expected, rtol=0, atol=1e-6)
    # and records the test split lacks: unseen categories, nulls, range edges
    synth = validator.validate(synthetic_records(specs, 500, seed=3))
    np.testing.assert_allclose(
        compiled.predict(synth), PipelinePredictor(pipe, specs).predict(synth), rtol=0, atol=1e-6
    )
    # one record at a time (XGBoost: the C API called directly, DensePredict) scores what the batch does
    # (to rounding: a one-row matrix product may round differently in the last bit)
    some = _records(X.iloc[:80])
    single = np.concatenate([compiled.predict(validator.validate([r])) for r in some])
    np.testing.assert_allclose(single, compiled.predict(validator.validate(some)), rtol=0, atol=1e-12)
    return compiled


def test_fast_path_equals_the_champion_pipeline_on_the_test_split(served):
    pipe, meta, test = served
    specs = field_specs(meta["feature_schema"])
    X = test[[s.name for s in specs]]
    assert len(X) > 1000
    compiled = _check(pipe, specs, X)
    assert {"xgboost": "xgboost", "logreg": "logistic_regression"}[meta["algorithm"]] == compiled.algorithm


def test_fast_path_equals_an_xgboost_pipeline(served):
    from core.dataset import load_config
    from core.settings import REPO_ROOT
    from training.train import xgb_pipeline

    _, meta, test = served
    specs = field_specs(meta["feature_schema"])
    X = test[[s.name for s in specs]]
    config = load_config(REPO_ROOT / "config" / "telco_churn.yaml")
    params = {"n_estimators": 150, "max_depth": 4, "learning_rate": 0.1}
    pipe = xgb_pipeline(config, params, 0, 1).fit(X, test["label"])  # only equality matters here
    assert _check(pipe, specs, X).algorithm == "xgboost"


def test_fast_path_equals_a_logistic_regression_pipeline(served):
    from core.dataset import load_config
    from core.settings import REPO_ROOT
    from training.train import baseline_pipeline

    _, meta, test = served
    specs = field_specs(meta["feature_schema"])
    X = test[[s.name for s in specs]]
    config = load_config(REPO_ROOT / "config" / "telco_churn.yaml")
    pipe = baseline_pipeline(config, 0).fit(
        X, test["label"]
    )  # fitted on the test split: only equality matters here
    assert _check(pipe, specs, X).algorithm == "logistic_regression"


def test_unsupported_steps_fall_back_to_the_pipeline(served):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    pipe, meta, test = served
    specs = field_specs(meta["feature_schema"])
    X = test[[s.name for s in specs]]
    forest = Pipeline(
        [
            ("preprocess", pipe.named_steps["preprocess"]),
            ("model", RandomForestClassifier(n_estimators=5, random_state=0)),
        ]
    )
    forest.named_steps["model"].fit(pipe.named_steps["preprocess"].transform(X), test["label"])
    with pytest.raises(CompileError, match="RandomForestClassifier"):
        compile_pipeline(forest, specs)
    loaded = build_loaded_model("m", "9", "champion", forest, meta)
    assert loaded.predictor.kind == "pipeline" and "RandomForestClassifier" in loaded.fast_path_note
    batch = loaded.validator.validate(_records(X.head(50)))
    np.testing.assert_allclose(loaded.predict(batch), forest.predict_proba(X.head(50))[:, 1])


def test_a_model_without_threshold_or_schema_is_refused(served):
    pipe, meta, _ = served
    with pytest.raises(ValueError, match="threshold"):
        build_loaded_model("m", "1", "champion", pipe, {k: v for k, v in meta.items() if k != "threshold"})
    with pytest.raises(ValueError, match="feature_schema"):
        build_loaded_model(
            "m", "1", "champion", pipe, {k: v for k, v in meta.items() if k != "feature_schema"}
        )
