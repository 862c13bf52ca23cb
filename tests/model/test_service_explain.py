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

from core.fastpath import PipelinePredictor, compile_pipeline, synthetic_records
from core.feature_schema import CATEGORICAL, field_specs
from model_service.explain import (
    Explainer,
    ExplainUnavailable,
    build_explainer,
    column_features,
    records_payload,
)
from model_service.request_schema import RecordValidator
from model_service.served_model import build_loaded_model, importance_list

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


@pytest.fixture
def champion_client(champion_env, monkeypatch):
    """The service app (test client) serving the session's trained champion; auth, validation and
    every error answer are tested on a small model in test_service_http.py."""
    from model_service.app import create_app
    from tests.support.service_process import API_KEY

    monkeypatch.setenv("API_KEYS", API_KEY)
    monkeypatch.setenv("SPOOL_DIR", str(champion_env.root / "spool-explain"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{champion_env.root / 'explain-unit.db'}")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    app = create_app(start_background=False)
    yield app.test_client(), {"X-API-Key": API_KEY}
    app.extensions["model_service"].shutdown()


def test_explain_endpoint_with_the_champion(champion_client):
    """Explanations of the champion through the app: they add up to the logit of the probability
    /v1/predict answers, and make sense; explain requests are not logged."""
    import math

    from tests.support.service_process import RECORD

    client, key = champion_client
    records = [RECORD, {**RECORD, "contract": "Two year", "tenure": 70, "total_charges": None}]
    ok = client.post("/v1/explain", json={"records": records}, headers=key)
    assert ok.status_code == 200, ok.text
    body = ok.get_json()
    assert body["units"] == "log-odds" and body["method"] in ("tree_shap", "linear")
    pred = client.post("/v1/predict", json={"records": records}, headers=key)
    for exp, p, rec in zip(body["explanations"], pred.get_json()["predictions"], records, strict=True):
        contribs = exp["contributions"]
        assert {c["feature"] for c in contribs} == set(RECORD)
        assert all(c["value"] == rec.get(c["feature"]) for c in contribs)
        sizes = [abs(c["contribution"]) for c in contribs]
        assert sizes == sorted(sizes, reverse=True)
        total = exp["base_value"] + sum(c["contribution"] for c in contribs)
        assert total == pytest.approx(exp["logit"], abs=1e-5)
        assert total == pytest.approx(math.log(exp["probability"] / (1 - exp["probability"])), abs=1e-4)
        assert exp["probability"] == pytest.approx(p["probability"], abs=1e-9) and exp["label"] == p["label"]
    # a month-to-month fibre customer with tenure 1: contract or tenure among the top 3 positive pushes
    positive = [c["feature"] for c in body["explanations"][0]["contributions"] if c["contribution"] > 0]
    assert {"contract", "tenure"} & set(positive[:3]), body["explanations"][0]["contributions"]
    # a two-year contract pulls the other record down
    second = {c["feature"]: c["contribution"] for c in body["explanations"][1]["contributions"]}
    assert second["contract"] < 0
    plog = client.application.extensions["model_service"].plog  # no writer here: records stay in the spool
    assert plog.spool.find(pred.get_json()["request_id"], 1) is not None and plog.queued() == 2
    assert plog.spool.find(body["request_id"], 0) is None  # explain requests are not logged


def test_model_endpoint_describes_the_champion(champion_client, champion_env):
    from tests.support.service_process import RECORD

    client, key = champion_client
    body = client.get("/v1/model", headers=key).get_json()
    assert body["version"] == champion_env.version and body["alias"] == "champion"
    assert body["predictor"] == "numpy" and body["explanation_method"] in ("tree_shap", "linear")
    assert {"roc_auc", "pr_auc"} <= set(body["test_metrics"])
    assert len(body["data_hash"]) == 64 and body["git_commit"]
    assert [f["name"] for f in body["feature_schema"]] == list(RECORD)
    values = [i["importance"] for i in body["feature_importance"]]
    assert {i["feature"] for i in body["feature_importance"]} == set(RECORD)
    assert values == sorted(values, reverse=True) and sum(values) == pytest.approx(1.0, abs=1e-4)
