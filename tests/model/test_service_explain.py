"""/v1/explain's arithmetic: contributions per ORIGINAL input feature that add up to the model's logit.

On the whole held-out test split, for the champion and for an XGBoost and a logistic-regression
pipeline (fast path and pipeline path): base + sum(contributions) equals the model's own margin
(computed independently through the sklearn pipeline) to 1e-5, and a categorical feature's
contribution is the sum of its one-hot columns' contributions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from model_service.explain import (
    Explainer,
    ExplainUnavailable,
    build_explainer,
    column_features,
    records_payload,
)
from model_service.fastpath import PipelinePredictor, compile_pipeline, synthetic_records
from model_service.model import build_loaded_model, importance_list
from model_service.schema import CATEGORICAL, RecordValidator, field_specs

ADDITIVE = 1e-5


@pytest.fixture(scope="module")
def config():
    from core.dataset import load_config
    from core.settings import REPO_ROOT

    return load_config(REPO_ROOT / "config" / "telco_churn.yaml")


@pytest.fixture(scope="module")
def other_pipelines(served, config):
    """An XGBoost and a logistic-regression pipeline, whichever the champion is (fitted on the test
    split: only the arithmetic matters here)."""
    from training.train import baseline_pipeline, xgb_pipeline

    _, meta, test = served
    X = test[[s["name"] for s in meta["feature_schema"]]]
    params = {"n_estimators": 80, "max_depth": 4, "learning_rate": 0.1}
    return {
        "xgboost": xgb_pipeline(config, params, 0, 1).fit(X, test["label"]),
        "logreg": baseline_pipeline(config, 0).fit(X, test["label"]),
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]


def _pipeline_margin(pipe, X: pd.DataFrame) -> np.ndarray:
    """The model's logit straight from the sklearn pipeline (no code of the explainer)."""
    Xt = pipe.named_steps["preprocess"].transform(X)
    est = pipe.named_steps["model"]
    if hasattr(est, "decision_function"):
        return np.asarray(est.decision_function(Xt), dtype=np.float64)
    return np.asarray(est.predict(Xt, output_margin=True), dtype=np.float64)


def _by_column(pipe, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Contributions per TRANSFORMED column, computed from the pipeline directly."""
    import xgboost as xgb

    pre, est = pipe.named_steps["preprocess"], pipe.named_steps["model"]
    Xt = np.asarray(pre.transform(X), dtype=np.float64)
    names = list(pre.get_feature_names_out())
    if hasattr(est, "coef_"):
        return np.full(len(Xt), est.intercept_[0]), Xt * est.coef_[0], names
    raw = est.get_booster().predict(xgb.DMatrix(Xt), pred_contribs=True)
    return raw[:, -1], raw[:, :-1], names


def _check_pipeline(pipe, meta, test, config, fast: bool) -> Explainer:
    from core.features import original_feature

    specs = field_specs(meta["feature_schema"])
    X = test[[s.name for s in specs]]
    validator = RecordValidator(specs)
    predictor = compile_pipeline(pipe, specs) if fast else PipelinePredictor(pipe, specs)
    probe = validator.validate(synthetic_records(specs, 256))
    explainer = build_explainer(pipe, specs, predictor, probe)
    batch = validator.validate(_records(X))
    exp = explainer.explain(batch)
    assert exp.contributions.shape == (len(X), len(specs)) and exp.features == [s.name for s in specs]

    # additivity: base + sum(contributions) == the model's logit, on every record of the test split
    margin = _pipeline_margin(pipe, X)
    np.testing.assert_allclose(exp.logit, margin, rtol=0, atol=ADDITIVE)
    np.testing.assert_allclose(expit(exp.logit), pipe.predict_proba(X)[:, 1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        expit(exp.logit), predictor.predict(batch), rtol=0, atol=1e-6
    )  # the probability /v1/explain returns

    # mapping: a feature's contribution is the sum of its transformed columns' contributions
    base, cols, names = _by_column(pipe, X)
    np.testing.assert_allclose(exp.base, base, rtol=0, atol=1e-6)
    grouped = (
        pd.DataFrame(cols, columns=[original_feature(n, config) for n in names]).T.groupby(level=0).sum().T
    )
    np.testing.assert_allclose(exp.contributions, grouped[exp.features].to_numpy(), rtol=0, atol=1e-5)
    # ... and unseen categories, nulls and range edges still add up
    synth = validator.validate(synthetic_records(specs, 300, seed=5))
    np.testing.assert_allclose(explainer.explain(synth).logit, explainer.margin(synth), rtol=0, atol=ADDITIVE)
    return explainer


def test_champion_contributions_add_up_to_its_logit_on_the_test_split(served, config):
    pipe, meta, test = served
    assert len(test) > 1000
    explainer = _check_pipeline(pipe, meta, test, config, fast=True)
    assert explainer.method == {"xgboost": "tree_shap", "logreg": "linear"}[meta["algorithm"]]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pipeline-path"])
def test_xgboost_tree_shap_per_input_feature(served, other_pipelines, config, fast):
    _, meta, test = served
    explainer = _check_pipeline(other_pipelines["xgboost"], meta, test, config, fast)
    assert explainer.method == "tree_shap"


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pipeline-path"])
def test_logistic_regression_linear_contributions(served, other_pipelines, config, fast):
    pipe = other_pipelines["logreg"]
    _, meta, test = served
    explainer = _check_pipeline(pipe, meta, test, config, fast)
    assert explainer.method == "linear"
    # base = intercept; a numeric feature: coef * standardised value; a categorical one: its category's coef
    specs = field_specs(meta["feature_schema"])
    rec = _records(test[[s.name for s in specs]].head(1))[0]
    exp = explainer.explain(RecordValidator(specs).validate([dict(rec)]))
    est, pre = pipe.named_steps["model"], pipe.named_steps["preprocess"]
    names = list(pre.get_feature_names_out())
    coef = dict(zip(names, est.coef_[0], strict=True))
    assert exp.base[0] == pytest.approx(est.intercept_[0])
    contract = exp.contributions[0, exp.features.index("contract")]
    assert contract == pytest.approx(coef[f"categorical__contract_{rec['contract']}"])
    scaler = pre.named_transformers_["numeric"].named_steps["scale"]
    j = list(pre.named_transformers_["numeric"].feature_names_in_).index("tenure")
    tenure = exp.contributions[0, exp.features.index("tenure")]
    expected = coef["numeric__tenure"] * (rec["tenure"] - scaler.mean_[j]) / scaler.scale_[j]
    assert tenure == pytest.approx(expected)


def test_column_mapping_covers_every_transformed_column(served):
    pipe, meta, _ = served
    specs = field_specs(meta["feature_schema"])
    mapped = column_features(pipe, specs)
    names = list(pipe.named_steps["preprocess"].get_feature_names_out())
    assert len(mapped) == len(names) and set(mapped) == {s.name for s in specs}
    for name, feature in zip(names, mapped, strict=True):
        spec = next(s for s in specs if s.name == feature)
        if spec.type == CATEGORICAL:  # one-hot columns: <transformer>__<feature>_<category>
            assert name.split("__", 1)[1].startswith(feature + "_"), name
        else:
            assert name.split("__", 1)[1] == feature, name
    # online_security vs. online_backup, streaming_tv vs. streaming_movies: no prefix confusion
    assert sum(f == "streaming_tv" for f in mapped) == sum(
        n.startswith("categorical__streaming_tv_") for n in names
    )


def test_payload_sorted_by_absolute_contribution_with_values(served):
    pipe, meta, test = served
    loaded = build_loaded_model("m", "1", "champion", pipe, meta)
    specs = loaded.specs
    batch = loaded.validator.validate(_records(test[[s.name for s in specs]].head(20)))
    exp = loaded.explainer.explain(batch)
    scores = loaded.predict(batch)
    out = records_payload(exp, batch.records, scores, loaded.labels(scores))
    assert [r["index"] for r in out] == list(range(20))
    for r, rec in zip(out, batch.records, strict=True):
        sizes = [abs(c["contribution"]) for c in r["contributions"]]
        assert sizes == sorted(sizes, reverse=True)
        assert {c["feature"] for c in r["contributions"]} == {s.name for s in specs}
        assert all(c["value"] == rec[c["feature"]] for c in r["contributions"])
        total = r["base_value"] + sum(c["contribution"] for c in r["contributions"])
        assert total == pytest.approx(r["logit"], abs=ADDITIVE)
        assert expit(r["logit"]) == pytest.approx(r["probability"], abs=1e-6)


def test_unsupported_estimator_has_no_explainer_but_still_serves(served):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    pipe, meta, test = served
    specs = field_specs(meta["feature_schema"])
    X = test[[s.name for s in specs]]
    pre = pipe.named_steps["preprocess"]
    forest = Pipeline(
        [("preprocess", pre), ("model", RandomForestClassifier(n_estimators=3, random_state=0))]
    )
    forest.named_steps["model"].fit(pre.transform(X), test["label"])
    with pytest.raises(ExplainUnavailable, match="RandomForestClassifier"):
        Explainer(forest, specs, PipelinePredictor(forest, specs))
    loaded = build_loaded_model("m", "9", "champion", forest, meta)
    assert loaded.explainer is None and "RandomForestClassifier" in loaded.explain_note
    assert loaded.describe()["explanation_method"] is None


def test_global_importance_sorted(served):
    pipe, meta, _ = served
    assert importance_list({"a": 0.1, "b": 0.5, "c": 0.1, "d": "x"}) == [
        {"feature": "b", "importance": 0.5},
        {"feature": "a", "importance": 0.1},
        {"feature": "c", "importance": 0.1},
    ]
    assert importance_list(None) == []
    described = build_loaded_model("m", "1", "champion", pipe, meta).describe()
    imp = described["feature_importance"]
    assert {i["feature"] for i in imp} == {s["name"] for s in meta["feature_schema"]}
    assert [i["importance"] for i in imp] == sorted((i["importance"] for i in imp), reverse=True)
    assert sum(i["importance"] for i in imp) == pytest.approx(1.0, abs=1e-4)


def test_explain_endpoint_in_process(champion_env, monkeypatch):
    """The Flask app (test client): auth, validation shared with /v1/predict, no prediction log rows."""
    from model_service.app import create_app, shutdown_all
    from tests.integration.service_process import API_KEY, RECORD

    monkeypatch.setenv("API_KEYS", API_KEY)
    monkeypatch.setenv("SPOOL_DIR", str(champion_env.root / "spool-explain"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{champion_env.root / 'explain-unit.db'}")
    app = create_app(start_background=False)
    try:
        client = app.test_client()
        assert client.post("/v1/explain", json={"records": [RECORD]}).status_code == 401
        bad = client.post(
            "/v1/explain", json={"records": [{**RECORD, "tenure": "x"}]}, headers={"X-API-Key": API_KEY}
        )
        assert bad.status_code == 422 and "records[0].tenure" in bad.get_json()["message"]
        ok = client.post(
            "/v1/explain",
            json={"records": [RECORD, {**RECORD, "contract": "Two year"}]},
            headers={"X-API-Key": API_KEY},
        )
        assert ok.status_code == 200, ok.text
        body = ok.get_json()
        assert body["units"] == "log-odds" and ok.headers["X-Request-ID"] == body["request_id"]
        pred = client.post("/v1/predict", json={"records": [RECORD]}, headers={"X-API-Key": API_KEY})
        assert body["explanations"][0]["probability"] == pytest.approx(
            pred.get_json()["predictions"][0]["probability"], abs=1e-9
        )
        plog = app.extensions["model_service"].plog  # no writer thread here: records stay queued
        assert plog.is_pending(pred.get_json()["request_id"]) and plog.queued() == 1
        assert not plog.is_pending(body["request_id"])  # explain requests are not logged
    finally:
        shutdown_all()
