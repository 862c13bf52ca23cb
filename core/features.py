"""Cleaning and feature engineering.

`prepare` turns a raw snapshot into model inputs (typed features) and a 0/1 label. Everything that
must also happen at prediction time (filling missing values, one-hot encoding with rare categories
grouped, scaling) is a step of the sklearn `Pipeline` built here, so the served artifact is
self-contained.

Missing values stay missing, in one representation: `coerce_features` turns every missing marker
(None, NaN, pd.NA, NaT) into NaN, numbers and categories alike, never into the string "nan". The
model's categorical step maps a missing category (NaN or None, also when the pipeline is called
directly) to the `__missing__` category of its encoder; a missing number is filled by the configured
value, median-imputed (linear baseline) or left to XGBoost's learned default direction. (So a pickled
pipeline refers to `missing_to_nan` here: loading it needs this `core` package, as every component has.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from core.dataset import DatasetConfig

MISSING_CATEGORY = "__missing__"


def category_string(value: object) -> str:
    """A present categorical value as the string the config declares (a float 2.0 read from a CSV
    column with missing values is the category "2", as it is without them)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def categories_with_nan(values: pd.Series) -> pd.Series:
    """A categorical column as object: strings, and NaN for every missing marker."""
    obj = values.astype(object)
    missing = obj.isna().to_numpy()
    return pd.Series(
        [np.nan if m else category_string(v) for v, m in zip(obj, missing, strict=True)],
        index=values.index,
        dtype=object,
    )


def missing_to_nan(X: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
    """The model's first categorical step: None, pd.NA and NaT become NaN, which the imputer after it
    maps to `__missing__` (sklearn's imputer sees only NaN in an object column)."""
    if isinstance(X, pd.DataFrame):
        return X.astype(object).where(X.notna(), np.nan)
    arr = np.asarray(X, dtype=object)
    return np.where(pd.isna(arr), np.nan, arr)


def coerce_features(frame: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """Feature columns in config order: numeric and binary as float64, categorical as str; every
    missing value (None, NaN, pd.NA, NaT) is NaN."""
    out = {}
    for feature in config.features:
        col = frame[feature.name]
        if feature.type == "categorical":
            out[feature.name] = categories_with_nan(col)
        else:
            out[feature.name] = pd.to_numeric(col, errors="coerce").astype("float64")  # markers -> NaN
    return pd.DataFrame(out, index=frame.index)


def json_record(row: pd.Series | dict, config: DatasetConfig) -> dict[str, Any]:
    """One record as the service takes it: null for a missing value (never "nan"), categories as
    strings, binary flags as 0/1, numbers as floats."""
    out: dict[str, Any] = {}
    for feature in config.features:
        value = row[feature.name]
        if value is None or pd.isna(value):
            out[feature.name] = None
        elif feature.type == "categorical":
            out[feature.name] = category_string(value)
        elif feature.type == "binary":
            out[feature.name] = int(value)
        else:
            out[feature.name] = float(value)
    return out


def example_record(config: DatasetConfig, reference: pd.DataFrame | None = None) -> dict[str, Any]:
    """A real record of the data set for docs and Swagger's "Try it out": the config's `example_record`,
    else the first record of `reference` (typed features, e.g. the model's reference sample); {} when
    neither exists."""
    if config.example_record:
        return json_record(config.example_record, config)
    if reference is not None and len(reference):
        return json_record(reference.iloc[0], config)
    return {}


def labels(frame: pd.DataFrame, config: DatasetConfig) -> pd.Series:
    return (frame[config.target].astype(str) == str(config.positive_class)).astype(int).rename("label")


def prepare(frame: pd.DataFrame, config: DatasetConfig) -> tuple[pd.DataFrame, pd.Series]:
    return coerce_features(frame, config), labels(frame, config)


def build_preprocessor(config: DatasetConfig, *, scale: bool) -> ColumnTransformer:
    """One-hot for categoricals (declared categories, rare ones grouped, unseen ones ignored).

    Numeric columns with a configured fill value get it; other missing numbers are left as NaN for
    XGBoost (which learns a default direction) or median-imputed for the linear baseline (`scale`).
    """
    fill = config.cleaning.get("fill") or {}
    numeric = [*config.of_type("numeric"), *config.of_type("binary")]
    filled = [c for c in numeric if c in fill]
    rest = [c for c in numeric if c not in fill]
    categorical = config.of_type("categorical")
    min_frequency = config.cleaning.get("rare_category_min_frequency")
    transformers: list = [
        (f"fill_{col}", SimpleImputer(strategy="constant", fill_value=float(fill[col])), [col])
        for col in filled
    ]
    if rest:
        numeric_step = (
            Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
            if scale
            else "passthrough"
        )
        transformers.append(("numeric", numeric_step, rest))
    if categorical:
        encoder = OneHotEncoder(
            categories=[[*config.feature(c).categories, MISSING_CATEGORY] for c in categorical],
            handle_unknown="infrequent_if_exist" if min_frequency else "ignore",
            min_frequency=min_frequency,
            sparse_output=False,
        )
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("missing", FunctionTransformer(missing_to_nan, feature_names_out="one-to-one")),
                        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
                        ("onehot", encoder),
                    ]
                ),
                categorical,
            )
        )
    preprocessor = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)
    if scale and filled:
        # the linear model also needs the filled columns on a comparable scale
        preprocessor = ColumnTransformer(
            [
                *[
                    (n, Pipeline([("fill", t), ("scale", StandardScaler())]), c)
                    for n, t, c in transformers[: len(filled)]
                ],
                *transformers[len(filled) :],
            ],
            remainder="drop",
            verbose_feature_names_out=True,
        )
    return preprocessor


def original_feature(transformed_name: str, config: DatasetConfig) -> str:
    """Map an output column of the preprocessor (e.g. `categorical__contract_Two year`) to its input."""
    bare = transformed_name.split("__", 1)[-1]
    for name in sorted(config.feature_names, key=len, reverse=True):
        if bare == name or bare.startswith(name + "_"):
            return name
    return bare
