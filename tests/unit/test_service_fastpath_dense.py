"""XGBoost's C API called directly for small batches (`core.fastpath.DensePredict`) gives exactly what
`Booster.inplace_predict` gives, is checked before use, and leaves other matrices to inplace_predict."""

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
