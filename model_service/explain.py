"""Per-record explanations: additive contributions of the ORIGINAL input features, in log-odds.

For a record x the service returns `base_value` and one `contribution` per input feature such that

    base_value + sum(contributions) == logit(probability)      (the model's margin, log-odds)

- XGBoost: exact tree SHAP from XGBoost itself (`booster.predict(DMatrix(X), pred_contribs=True)`) on the
  transformed matrix (the fast path's numpy transform, or the pipeline's preprocessor). The last column
  XGBoost returns is the bias: the expected margin over the training data (cover-weighted), plus
  `base_score`; that is `base_value`.
- Logistic regression: the exact linear decomposition `contribution_j = coef_j * x_j` on the transformed
  columns, `base_value = intercept`. Numeric columns are standardised in the pipeline, so a numeric
  feature's contribution is measured from its training mean; a categorical feature contributes the
  coefficient of the record's (one-hot) category, measured from "no category active". The pipeline
  does not keep the training background (the one-hot columns' training frequencies), so the
  mean-centred variant `coef * (x - mean)` is not used.

Both are additive: a categorical feature's contribution is the sum of its one-hot columns'
contributions. Transformed columns are mapped to their input feature by
`core.features.original_feature` (the same mapping as the training-time global importance).
Anything else (another estimator) has no explainer: `/v1/explain` answers 501 for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from core.fastpath import CompiledPredictor, PipelinePredictor, to_frame
from core.feature_schema import FieldSpec, Validated
from core.features import original_feature

ADDITIVITY_TOLERANCE = 1e-5
UNITS = "log-odds"


class ExplainUnavailable(ValueError):
    """The served estimator has no exact explainer here."""


@dataclass
class Explanation:
    base: np.ndarray  # (n,) log-odds
    contributions: np.ndarray  # (n, k): per input feature, in `features` order
    features: list[str]

    @property
    def logit(self) -> np.ndarray:
        return self.base + self.contributions.sum(axis=1)


def column_features(pipeline: Any, specs: list[FieldSpec]) -> list[str]:
    """The input feature of every output column of the pipeline's preprocessor."""
    names = [str(n) for n in pipeline.named_steps["preprocess"].get_feature_names_out()]
    inputs = SimpleNamespace(feature_names=[s.name for s in specs])
    mapped = [original_feature(n, inputs) for n in names]
    unknown = sorted({f for f in mapped if f not in set(inputs.feature_names)})
    if unknown:
        raise ExplainUnavailable(f"transformed columns map to no input feature: {unknown[:5]}")
    return mapped


def aggregation_matrix(columns: list[str], features: list[str]) -> np.ndarray:
    """(width, k) 0/1 matrix: column j adds into the feature it came from."""
    index = {f: i for i, f in enumerate(features)}
    agg = np.zeros((len(columns), len(features)), dtype=np.float64)
    for j, f in enumerate(columns):
        agg[j, index[f]] = 1.0
    return agg


class Explainer:
    def __init__(
        self,
        pipeline: Any,
        specs: list[FieldSpec],
        predictor: CompiledPredictor | PipelinePredictor,
    ):
        from sklearn.linear_model import LogisticRegression

        self.specs = specs
        self.features = [s.name for s in specs]
        self.pipeline = pipeline
        steps = getattr(pipeline, "named_steps", None) or {}
        if "preprocess" not in steps or len(pipeline.steps) != 2:
            raise ExplainUnavailable("expected Pipeline([preprocess, model])")
        self._pre = pipeline.steps[0][1]
        est = pipeline.steps[1][1]
        self._agg = aggregation_matrix(column_features(pipeline, specs), self.features)
        self._compiled = predictor if isinstance(predictor, CompiledPredictor) else None
        if type(est).__name__ == "XGBClassifier":
            self.method = "tree_shap"
            self._booster = est.get_booster()
            try:
                self._iteration_range = (0, int(est.best_iteration) + 1)
            except AttributeError:
                self._iteration_range = (0, 0)
            self._columns = self._tree_shap
        elif isinstance(est, LogisticRegression):
            coef = np.asarray(est.coef_, dtype=np.float64)
            if coef.shape != (1, self._agg.shape[0]):
                raise ExplainUnavailable(f"LogisticRegression coef_ shape {coef.shape}")
            self.method = "linear"
            self._w, self._b = coef[0].copy(), float(est.intercept_[0])
            self._columns = self._linear
        else:
            raise ExplainUnavailable(f"no exact explainer for {type(est).__name__}")

    def transform(self, batch: Validated) -> np.ndarray:
        """The model's input matrix: the fast path's numpy transform, or the pipeline's preprocessor."""
        if self._compiled is not None:
            return self._compiled.transform(batch)
        out = self._pre.transform(to_frame(batch, self.specs))
        return np.asarray(out.toarray() if hasattr(out, "toarray") else out, dtype=np.float64)

    def _tree_shap(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import xgboost as xgb

        contribs = self._booster.predict(
            xgb.DMatrix(X, missing=np.nan),
            pred_contribs=True,
            iteration_range=self._iteration_range,
            validate_features=False,
        )
        contribs = np.asarray(contribs, dtype=np.float64).reshape(X.shape[0], X.shape[1] + 1)
        return contribs[:, -1], contribs[:, :-1]

    def _linear(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full(X.shape[0], self._b), X * self._w

    def explain(self, batch: Validated) -> Explanation:
        base, by_column = self._columns(self.transform(batch))
        return Explanation(base, by_column @ self._agg, self.features)

    def margin(self, batch: Validated) -> np.ndarray:
        """The model's own log-odds, computed independently of the contributions (for checks)."""
        X = self.transform(batch)
        if self.method == "linear":
            return X @ self._w + self._b
        import xgboost as xgb

        out = self._booster.predict(
            xgb.DMatrix(X, missing=np.nan),
            output_margin=True,
            iteration_range=self._iteration_range,
            validate_features=False,
        )
        return np.asarray(out, dtype=np.float64).reshape(-1)


def build_explainer(
    pipeline: Any, specs: list[FieldSpec], predictor: CompiledPredictor | PipelinePredictor, probe: Validated
) -> Explainer:
    """An explainer checked for additivity on `probe` (raises ExplainUnavailable when it fails)."""
    explainer = Explainer(pipeline, specs, predictor)
    exp = explainer.explain(probe)
    diff = float(np.max(np.abs(exp.logit - explainer.margin(probe))))
    if not np.isfinite(diff) or diff > ADDITIVITY_TOLERANCE:
        raise ExplainUnavailable(f"contributions do not add up to the margin (max |diff| {diff:.2e})")
    return explainer


def records_payload(
    exp: Explanation, records: list[dict[str, Any]], probabilities: np.ndarray, labels: np.ndarray
) -> list[dict[str, Any]]:
    """One answer per record, contributions sorted by absolute size (largest first)."""
    order = np.argsort(-np.abs(exp.contributions), axis=1, kind="stable")
    base, logit = exp.base.tolist(), exp.logit.tolist()
    contribs = exp.contributions.tolist()
    probs, labs = probabilities.tolist(), labels.tolist()
    feats = exp.features
    out = []
    for i, rec in enumerate(records):
        row = contribs[i]
        out.append(
            {
                "index": i,
                "probability": probs[i],
                "label": labs[i],
                "base_value": base[i],
                "logit": logit[i],
                "contributions": [
                    {"feature": feats[j], "value": rec.get(feats[j]), "contribution": row[j]}
                    for j in order[i].tolist()
                ],
            }
        )
    return out
