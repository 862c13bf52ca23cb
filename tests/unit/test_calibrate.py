"""training.calibrate: a calibration is kept only when it lowers the out-of-fold calibration error."""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from core.estimate import expected_calibration_error
from training.calibrate import NONE, calibrate


class Fixed(ClassifierMixin, BaseEstimator):
    """A 'fitted' model whose score is `power`-th power of the column p (1: calibrated)."""

    def __init__(self, power: float = 1.0):
        self.power = power

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        s = np.asarray(X["p"], dtype=float) ** self.power
        return np.column_stack([1 - s, s])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.8, 2.0, n)
    return pd.DataFrame({"p": p}), pd.Series((rng.random(n) < p).astype(int))


def test_a_calibrated_model_is_kept_as_it_is():
    X, y = _data()
    model = Fixed(1.0).fit(X, y)
    out = calibrate(model, X, y, seed=1)
    assert out.method == NONE and out.model is model
    assert set(out.errors) == {NONE, "sigmoid", "isotonic"}


def test_an_overconfident_model_is_calibrated_and_its_error_falls():
    X, y = _data()
    model = Fixed(0.5).fit(X, y)  # sqrt(p): every risk overstated
    out = calibrate(model, X, y, seed=1)
    assert out.method in ("sigmoid", "isotonic")
    assert out.errors[out.method] < out.errors[NONE] / 2
    X_new, y_new = _data(seed=7)
    before = expected_calibration_error(y_new, model.predict_proba(X_new)[:, 1])
    after = expected_calibration_error(y_new, out.model.predict_proba(X_new)[:, 1])
    assert after < 0.03 < before
