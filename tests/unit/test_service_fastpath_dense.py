"""The fast path on small batches: XGBoost's C API called directly (`core.fastpath.DensePredict`) gives
exactly what `Booster.inplace_predict` gives, is checked before use, and leaves other matrices to
inplace_predict; one record is transformed in plain Python exactly as numpy transforms it in a batch."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost

from core.fastpath import DensePredict


@pytest.fixture(scope="module")
def booster():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    return xgboost.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(X, y).get_booster()


def _reference(booster, iteration_range=(0, 0)):
    def inplace(X):
        out = booster.inplace_predict(X, iteration_range=iteration_range, validate_features=False)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    return inplace


@pytest.mark.parametrize("iteration_range", [(0, 0), (0, 3)])
def test_dense_predict_equals_inplace_predict(booster, iteration_range):
    reference = _reference(booster, iteration_range)
    dense = DensePredict.build(booster, iteration_range, 6, reference)
    assert dense is not None
    X = np.random.default_rng(1).normal(size=(DensePredict.MAX_ROWS, 6))
    X[3, 2] = np.nan  # missing values take the trees' default branch
    for rows in (X[:1], X[:7], X):
        out = dense(rows)
        assert out.dtype == np.float64 and out.shape == (len(rows),)
        np.testing.assert_array_equal(out, reference(rows))
    if iteration_range != (0, 0):  # the range is passed on: fewer trees, other scores
        assert not np.array_equal(dense(X), _reference(booster)(X))


def test_dense_predict_takes_only_small_c_contiguous_float64_matrices(booster):
    dense = DensePredict.build(booster, (0, 0), 6, _reference(booster))
    X = np.zeros((DensePredict.MAX_ROWS + 1, 6))
    assert dense.takes(X[:1]) and dense.takes(X[:-1])
    assert not dense.takes(X)  # too many rows
    assert not dense.takes(X[:0])
    assert not dense.takes(np.asfortranarray(X[:3]))
    assert not dense.takes(X[:3].astype(np.float32))
    assert not dense.takes(np.zeros((3, 5)))
    with pytest.raises(ValueError):
        dense(np.zeros((3, 5)))


def test_dense_predict_is_not_used_when_its_check_fails(booster):
    assert DensePredict.build(booster, (0, 0), 6, lambda X: np.zeros(len(X))) is None
    assert DensePredict.build(booster, (0, 0), 7, _reference(booster)) is None  # wrong width


@pytest.mark.parametrize("scale", [True, False], ids=["logreg", "xgboost"])
def test_one_record_is_transformed_exactly_as_in_a_batch(scale):
    """`CompiledPredictor.transform` of a one-record batch (plain Python, `transform_row`) gives the row
    the numpy path gives that record in a batch: nulls, unseen categories, range edges included."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from core.dataset import load_config
    from core.fastpath import compile_pipeline, synthetic_records, to_frame
    from core.feature_schema import field_specs
    from core.features import build_preprocessor
    from core.settings import REPO_ROOT
    from model_service.request_schema import RecordValidator

    config = load_config(REPO_ROOT / "config" / "telco_churn.yaml")
    specs = field_specs([f.as_dict() for f in config.features])
    validator = RecordValidator(specs)
    records = synthetic_records(specs, 400, seed=5)
    X = to_frame(validator.validate(records), specs)
    y = np.random.default_rng(0).integers(0, 2, len(X))
    model = LogisticRegression(max_iter=300) if scale else xgboost.XGBClassifier(n_estimators=5, n_jobs=1)
    pipe = Pipeline([("preprocess", build_preprocessor(config, scale=scale)), ("model", model)]).fit(X, y)
    compiled = compile_pipeline(pipe, specs)
    assert compiled._row_plan is not None
    batch = compiled.transform(validator.validate(records))  # the numpy path (400 records)
    assert any(v is None for r in records for v in r.values())  # nulls are covered
    for i, record in enumerate(records):
        one = validator.validate([record])
        np.testing.assert_array_equal(compiled.transform(one), batch[i : i + 1])
        one.matrix = None  # the column-by-column form of a batch too
        np.testing.assert_array_equal(compiled.transform(one), batch[i : i + 1])
    np.testing.assert_allclose(  # a one-row matrix product may round differently in the last bit
        np.concatenate([compiled.predict(validator.validate([r])) for r in records[:50]]),
        compiled.predict(validator.validate(records[:50])),
        rtol=0,
        atol=1e-12,
    )
