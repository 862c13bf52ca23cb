"""A numpy fast path compiled from the fitted sklearn pipeline, and the pipeline path it stands in for.

Where one-record latency goes with the pipeline (measured, design notes): ColumnTransformer ~8 ms,
pandas category cast ~5 ms, XGBoost's pandas path ~4.5 ms; `booster.inplace_predict` on numpy
~0.3 ms. `compile_pipeline` reads the fitted steps and rebuilds the same arithmetic on numpy:

- numeric columns: the fitted fill value of each `SimpleImputer`, then `(x - mean_) / scale_` of each
  `StandardScaler` (identity `FunctionTransformer`/passthrough steps skipped);
- categorical columns: the fitted categorical transformer is *probed* once per input column with every
  known category, a missing value and an unseen category; the rows it returns become a lookup table,
  so a batch is one-hot encoded by dict lookups and one fancy index per column (this reproduces
  whatever the fitted encoder does with rare, unknown and missing categories);
- the estimator: `XGBClassifier` -> `booster.inplace_predict`, `LogisticRegression` -> the linear
  formula with `expit`.

Anything else (another transformer or estimator, a non-separable encoder) raises `CompileError` and
the service uses the pipeline itself. A compiled model is also checked against the pipeline on
synthetic records at load time (`verify`); if it differs by more than 1e-6 it is not used.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from core.feature_schema import CATEGORICAL, FieldSpec, Validated

TOLERANCE = 1e-6
_UNSEEN = "\x00unseen-category-probe\x00"


class CompileError(ValueError):
    """The pipeline holds a step the fast path does not reproduce; use the pipeline."""


# --------------------------------------------------------------------------- pipeline path
def to_frame(batch: Validated, specs: list[FieldSpec]) -> pd.DataFrame:
    """The batch as the pipeline was trained on it: numbers float64 (NaN), categories object (NaN)."""
    cols: dict[str, Any] = {}
    for spec in specs:
        if spec.type == CATEGORICAL:
            values = batch.categorical[spec.name]
            cols[spec.name] = pd.Series([np.nan if v is None else v for v in values], dtype=object)
        else:
            cols[spec.name] = batch.numeric[spec.name]
    return pd.DataFrame(cols)


def positive_column(estimator: Any) -> int:
    classes = list(getattr(estimator, "classes_", [0, 1]))
    if len(classes) != 2:
        raise CompileError(f"estimator has {len(classes)} classes, expected 2")
    return 1


class PipelinePredictor:
    kind = "pipeline"

    def __init__(self, pipeline: Any, specs: list[FieldSpec]):
        self.pipeline = pipeline
        self.specs = specs

    def predict(self, batch: Validated) -> np.ndarray:
        proba = self.pipeline.predict_proba(to_frame(batch, self.specs))
        return np.asarray(proba, dtype=np.float64)[:, 1]


# --------------------------------------------------------------------------- compiled path
@dataclass
class NumericBlock:
    columns: list[str]
    out: slice
    fill: np.ndarray | None  # per column, applied where NaN
    ops: list[tuple[str, np.ndarray]]  # ("fill", v) | ("sub", v) | ("div", v), in order


@dataclass
class CategoricalBlock:
    """Lookup tables of a categorical transformer, one small table per input column.

    Every input column owns a disjoint set of output columns (checked when probing). For column j,
    `tables[j]` has one row per code (its known values in `values[j]` order, then missing, then
    unseen) and one column per output column it owns (`owned[j]`, relative to `out`); `rest` holds the
    output columns no input column moves (their constant value). Encoding a batch is one gather per
    input column: `X[:, out][:, owned[j]] = tables[j][codes_j]`, the rest constant.
    """

    columns: list[str]
    out: slice
    values: list[list[str]]  # per column: the known values, in code order
    lookups: list[dict[str, int]]  # per column: value -> code (missing: len(values), unseen: len + 1)
    owned: list[np.ndarray]
    tables: list[np.ndarray]
    rest: np.ndarray
    _columns: dict[Any, list[list[np.ndarray]]] = field(default_factory=dict, repr=False, compare=False)

    def missing_code(self, j: int) -> int:
        return len(self.values[j])

    def unseen_code(self, j: int) -> int:
        return len(self.values[j]) + 1

    def codes_of(self, j: int, column: list[str | None]) -> np.ndarray:
        """Codes of a column of Python values (None: missing), by dict lookups (the service's batches)."""
        lookup, missing, unseen = self.lookups[j], self.missing_code(j), self.unseen_code(j)
        return np.fromiter(
            (missing if v is None else lookup.get(v, unseen) for v in column),
            dtype=np.intp,
            count=len(column),
        )

    def _table_columns(self, dtype: Any) -> list[list[np.ndarray]]:
        """Each table's columns as contiguous arrays of the matrix's dtype (made once per dtype)."""
        dtype = np.dtype(dtype)
        if dtype not in self._columns:
            self._columns[dtype] = [
                [np.ascontiguousarray(table[:, k], dtype=dtype) for k in range(table.shape[1])]
                for table in self.tables
            ]
        return self._columns[dtype]

    def encode(self, codes: list[np.ndarray], X: np.ndarray) -> None:
        """Write the block's output columns of X from one code array per input column.

        Row-major X (the service's small batches): one gather of rows per input column. Column-major X
        (batch scoring's large ones): one contiguous gather per output column. The same values either
        way: each output column is a copy of its table's column at the row's code, or constant."""
        block = X[:, self.out]
        if X.flags.f_contiguous and not X.flags.c_contiguous:
            done = np.zeros(block.shape[1], dtype=bool)
            for owned, columns, code in zip(self.owned, self._table_columns(X.dtype), codes, strict=True):
                for column, c in zip(columns, owned, strict=True):
                    # codes are in range by construction: "clip" skips the buffered copy of "raise"
                    np.take(column, code, out=block[:, c], mode="clip")
                done[owned] = True
            for c in np.flatnonzero(~done):
                block[:, c] = self.rest[c]
            return
        block[:] = self.rest
        for owned, table, code in zip(self.owned, self.tables, codes, strict=True):
            if len(owned):
                block[:, owned] = table[code]


def _numeric_ops(trans: Any) -> list[tuple[str, np.ndarray]]:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    if isinstance(trans, str):
        if trans == "passthrough":
            return []
        raise CompileError(f"numeric transformer {trans!r}")
    if isinstance(trans, Pipeline):
        return [op for _, step in trans.steps for op in _numeric_ops(step)]
    if isinstance(trans, FunctionTransformer):
        if trans.func is None:
            return []
        raise CompileError("FunctionTransformer with a function")
    if isinstance(trans, SimpleImputer):
        missing = trans.missing_values
        if trans.add_indicator or not (isinstance(missing, float) and math.isnan(missing)):
            raise CompileError("SimpleImputer with an indicator or a non-NaN missing marker")
        stats = np.asarray(trans.statistics_, dtype=np.float64)
        if np.isnan(stats).any():
            raise CompileError("SimpleImputer dropped an all-missing column")
        return [("fill", stats)]
    if isinstance(trans, StandardScaler):
        ops = []
        if trans.with_mean:
            ops.append(("sub", np.asarray(trans.mean_, dtype=np.float64)))
        if trans.with_std:
            ops.append(("div", np.asarray(trans.scale_, dtype=np.float64)))
        return ops
    raise CompileError(f"numeric transformer {type(trans).__name__}")


def _known_categories(trans: Any) -> list[list[str]]:
    """Categories the fitted encoder knows per column (they may include e.g. a missing token)."""
    steps = getattr(trans, "steps", None) or [("", trans)]
    for _, step in reversed(steps):
        cats = getattr(step, "categories_", None)
        if cats is not None:
            return [[str(c) for c in col if isinstance(c, str)] for col in cats]
    return []


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def _categorical_block(
    trans: Any, columns: list[str], out: slice, specs: dict[str, FieldSpec]
) -> CategoricalBlock:
    known = _known_categories(trans)
    values: list[list[Any]] = []
    for j, col in enumerate(columns):
        cats = list(dict.fromkeys([*specs[col].categories, *(known[j] if j < len(known) else [])]))
        values.append([*cats, np.nan, _UNSEEN])
    # One frame: the base record (every column at its first value), then for each column one row per
    # value with the others at their first value. One `transform` call for all the probes (each call
    # costs the fitted transformer's fixed overhead, ~15 ms); the rows are independent of each other.
    probes = [{c: [values[k][0]] for k, c in enumerate(columns)}]
    for j, col in enumerate(columns):
        probe = {c: [values[k][0]] * len(values[j]) for k, c in enumerate(columns)}
        probe[col] = values[j]
        probes.append(probe)
    try:
        frame = pd.DataFrame({c: [v for p in probes for v in p[c]] for c in columns}, dtype=object)
        stacked = _dense(trans.transform(frame))
    except Exception:  # noqa: BLE001 - probe one by one below, to name what fails
        stacked = None
    ends = np.cumsum([len(p[columns[0]]) for p in probes])
    parts = [] if stacked is None else np.split(stacked, ends[:-1])

    def probed(i: int, what: str) -> np.ndarray:
        if parts:
            return parts[i]
        try:
            return _dense(trans.transform(pd.DataFrame(probes[i], dtype=object)))
        except Exception as exc:
            raise CompileError(f"categorical transformer fails on {what}: {exc}") from exc

    base = probed(0, "a probe")[0]
    width = out.stop - out.start
    if base.shape[0] != width:
        raise CompileError("categorical block width differs from the ColumnTransformer's slice")
    owned = np.zeros(width, dtype=bool)
    owned_by, tables, lookups, known_values = [], [], [], []
    for j, col in enumerate(columns):
        table = probed(j + 1, f"probe of {col}")
        idx = np.flatnonzero((table != base).any(axis=0))
        if owned[idx].any():
            raise CompileError(f"categorical output columns of {col} overlap another column's")
        owned[idx] = True
        owned_by.append(idx)
        tables.append(np.ascontiguousarray(table[:, idx]))
        n_cats = len(values[j]) - 2
        known_values.append(list(values[j][:n_cats]))
        lookups.append({v: i for i, v in enumerate(values[j][:n_cats])})
    rest = np.where(owned, 0.0, base)
    return CategoricalBlock(columns, out, known_values, lookups, owned_by, tables, rest)


class CompiledPredictor:
    kind = "numpy"

    def __init__(self, blocks: list, width: int, score: Any, algorithm: str, matrix_dtype: Any = np.float64):
        self.blocks = blocks
        self.width = width
        self._score = score
        self.algorithm = algorithm
        # the narrowest matrix that gives the estimator the same numbers: XGBoost reads float32
        # (a float64 matrix is cast value by value inside `inplace_predict`), the linear model float64
        self.matrix_dtype = np.dtype(matrix_dtype)
        self._row_plan = self._plan_rows()

    def _plan_rows(self) -> tuple[list[float], list, list] | None:
        """What `transform_row` needs: the row's constant values (each categorical block's `rest`), per
        numeric column its output index and operations as Python floats, per categorical column its
        lookup and, per code, the (output index, value) pairs its table row sets."""
        base = [0.0] * self.width
        numeric, categorical = [], []
        for block in self.blocks:
            start = block.out.start
            if isinstance(block, NumericBlock):
                for k, col in enumerate(block.columns):
                    ops = [(op, float(v[k])) for op, v in block.ops]
                    if ("div", 0.0) in ops:
                        return None  # numpy divides by zero where Python raises: keep numpy's answer
                    numeric.append((col, start + k, ops))
            else:
                base[block.out] = block.rest.tolist()
                for j, col in enumerate(block.columns):
                    cols = [start + int(c) for c in block.owned[j]]
                    per_code = [list(zip(cols, row, strict=True)) for row in block.tables[j].tolist()]
                    lookup = block.lookups[j]
                    categorical.append((col, lookup, block.missing_code(j), block.unseen_code(j), per_code))
        return base, numeric, categorical

    def transform_row(self, batch: Validated) -> np.ndarray:
        """`transform` of a one-record batch in plain Python: the same operations on the same float64
        numbers (fill, subtract, divide; the table rows), without a numpy call per block and column.
        Equal to `transform` (unit-tested). Needs `_row_plan` (None: a scale of zero)."""
        base, numeric, categorical = self._row_plan
        row = base.copy()
        if batch.matrix is not None:
            values, index = batch.matrix[0].tolist(), batch.column_index
            get = lambda c: values[index[c]]  # noqa: E731
        else:
            get = lambda c: float(batch.numeric[c][0])  # noqa: E731
        for col, out, ops in numeric:
            v = get(col)
            for op, a in ops:
                if op == "fill":
                    if v != v:  # NaN
                        v = a
                elif op == "sub":
                    v = v - a
                else:
                    v = v / a
            row[out] = v
        cats = batch.categorical
        for col, lookup, missing, unseen, per_code in categorical:
            value = cats[col][0]
            for out, v in per_code[missing if value is None else lookup.get(value, unseen)]:
                row[out] = v
        return np.array([row], dtype=np.float64)

    def transform(self, batch: Validated) -> np.ndarray:
        """The model's input matrix of a validated batch (the service's records)."""
        if batch.n == 1 and self._row_plan is not None:
            return self.transform_row(batch)
        if batch.matrix is not None:
            numeric, index = batch.matrix, batch.column_index
        else:
            names = [c for block in self.blocks if isinstance(block, NumericBlock) for c in block.columns]
            numeric = np.column_stack([batch.numeric[c] for c in names]) if names else np.empty((batch.n, 0))
            index = {c: j for j, c in enumerate(names)}
        codes = {
            col: block.codes_of(j, batch.categorical[col])
            for block in self.blocks
            if isinstance(block, CategoricalBlock)
            for j, col in enumerate(block.columns)
        }
        return self.transform_arrays(batch.n, numeric, index, codes)

    def transform_arrays(
        self,
        n: int,
        numeric: np.ndarray,
        column_index: dict[str, int],
        codes: dict[str, np.ndarray],
        order: str = "C",
        dtype: Any = np.float64,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The model's input matrix from arrays: numeric and binary features as float64 columns of
        `numeric` (NaN: missing; `column_index` names them), each categorical feature as its codes
        (`CategoricalBlock.codes_of`, or vectorised by the caller: batch scoring). Every path to the
        fast path's numbers goes through here. `order="F"` builds a column-major matrix (faster to fill
        for large batches; the same numbers). `dtype=self.matrix_dtype` builds the narrowest matrix the
        estimator reads the same (float32 for XGBoost: every value computed in float64, then rounded
        once, as XGBoost rounds a float64 matrix; half the bytes to write and to read). `out`: a matrix
        of that shape, dtype and order to fill instead of a new one (every element is written)."""
        if out is None:
            X = np.empty((n, self.width), dtype=dtype, order=order)
        else:
            if out.shape != (n, self.width) or out.dtype != np.dtype(dtype):
                raise ValueError(
                    f"out is {out.shape} {out.dtype}, expected {(n, self.width)} {np.dtype(dtype)}"
                )
            X = out
        for block in self.blocks:
            if isinstance(block, NumericBlock):
                sub = numeric[:, [column_index[c] for c in block.columns]]
                for op, v in block.ops:
                    if op == "fill":
                        nan = np.isnan(sub)
                        if nan.any():
                            sub = np.where(nan, v, sub)
                    elif op == "sub":
                        sub = sub - v
                    else:
                        sub = sub / v
                X[:, block.out] = sub
            else:
                block.encode([codes[col] for col in block.columns], X)
        return X

    def score(self, X: np.ndarray) -> np.ndarray:
        """P(positive) of a prepared matrix (`transform`/`transform_arrays`)."""
        return self._score(X)

    def predict(self, batch: Validated) -> np.ndarray:
        return self._score(self.transform(batch))


class DensePredict:
    """XGBoost's C API `XGBoosterPredictFromDense` (what `Booster.inplace_predict` calls) on a small
    C-contiguous float64 matrix, called directly.

    For one record, `inplace_predict`'s Python side (input type dispatch, the JSON of its arguments and
    of the array interface, the output's array interface) cost about as much as the prediction itself:
    ~100 us against ~40 us here (docs/benchmarks.md, Serving). The arguments are the ones
    `inplace_predict(X, iteration_range=..., validate_features=False)` passes, serialised once; the
    prediction buffer is XGBoost's per-thread one (thread-safe like `inplace_predict`), copied at once.
    `build` checks it against `inplace_predict` on probe rows (missing values included) and returns
    None (callers keep `inplace_predict`) if the library lacks the function or any score differs."""

    MAX_ROWS = 64  # larger batches: inplace_predict (its overhead is spread over the rows)

    def __init__(self, booster: Any, iteration_range: tuple[int, int], width: int):
        import ctypes
        import json

        from xgboost.libpath import find_lib_path

        lib = ctypes.CDLL(find_lib_path()[0])  # the library xgboost loaded (dlopen returns it again)
        fn = lib.XGBoosterPredictFromDense
        fn.restype = ctypes.c_int
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.POINTER(ctypes.c_uint64)),
            ctypes.POINTER(ctypes.c_uint64),
            ctypes.POINTER(ctypes.POINTER(ctypes.c_float)),
        ]
        lib.XGBGetLastError.restype = ctypes.c_char_p
        self._ctypes = ctypes
        self._fn = fn
        self._error = lib.XGBGetLastError
        self._booster = booster  # keeps the handle alive
        self._width = width
        self._iteration_range = (int(iteration_range[0]), int(iteration_range[1]))
        self._config = json.dumps(
            {
                "type": 0,
                "training": False,
                "iteration_begin": int(iteration_range[0]),
                "iteration_end": int(iteration_range[1]),
                "missing": float("nan"),
                "strict_shape": False,
                "cache_id": 0,
            }
        ).encode()

    def __reduce__(self):
        # ctypes handles do not pickle (batch scoring ships its scorer to Spark executors with
        # cloudpickle): rebuilt from the booster, which pickles, in the process that unpickles it
        return (type(self), (self._booster, self._iteration_range, self._width))

    @classmethod
    def build(
        cls, booster: Any, iteration_range: tuple[int, int], width: int, reference: Any
    ) -> DensePredict | None:
        try:
            dense = cls(booster, iteration_range, width)
            probe = np.random.default_rng(0).normal(size=(5, width))
            probe[1, ::3] = np.nan
            for rows in (probe[:1], probe):
                if not np.array_equal(dense(rows), reference(rows)):
                    return None
        except Exception:  # noqa: BLE001 - any surprise: keep the public API
            return None
        return dense

    def takes(self, X: np.ndarray) -> bool:
        """Whether `X` is a matrix this path scores (else: `inplace_predict`)."""
        return (
            0 < X.shape[0] <= self.MAX_ROWS
            and X.dtype == np.float64
            and X.ndim == 2
            and X.shape[1] == self._width
            and X.flags.c_contiguous
        )

    def __call__(self, X: np.ndarray) -> np.ndarray:
        ct = self._ctypes
        if not self.takes(X):
            raise ValueError("DensePredict needs 1 to MAX_ROWS rows, C-contiguous float64, the model's width")
        n = X.shape[0]
        interface = (
            f'{{"data":[{X.ctypes.data},true],"shape":[{n},{self._width}],"strides":null,'
            f'"typestr":"<f8","version":3}}'
        ).encode()
        shape = ct.POINTER(ct.c_uint64)()
        dims = ct.c_uint64()
        preds = ct.POINTER(ct.c_float)()
        rc = self._fn(
            self._booster.handle,
            interface,
            self._config,
            None,
            ct.byref(shape),
            ct.byref(dims),
            ct.byref(preds),
        )
        if rc != 0:
            raise RuntimeError(f"XGBoosterPredictFromDense: {self._error().decode(errors='replace')}")
        size = 1
        for i in range(dims.value):
            size *= shape[i]
        if size != n:
            raise RuntimeError(f"XGBoosterPredictFromDense: {size} scores for {n} rows")
        return np.fromiter((preds[i] for i in range(n)), dtype=np.float64, count=n)  # a copy, float32 -> 64


def compile_pipeline(pipeline: Any, specs: list[FieldSpec], threads: int = 1) -> CompiledPredictor:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression

    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2:
        raise CompileError("expected Pipeline([preprocess, model])")
    pre, est = steps[0][1], steps[1][1]
    if not isinstance(pre, ColumnTransformer):
        raise CompileError(f"preprocess step is {type(pre).__name__}, not a ColumnTransformer")
    by_name = {s.name: s for s in specs}
    width = int(len(pre.get_feature_names_out()))
    blocks: list = []
    covered = np.zeros(width, dtype=bool)
    for name, trans, cols in pre.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        out = pre.output_indices_[name]
        if out.stop == out.start:
            continue
        if not isinstance(cols, list | tuple) or not all(isinstance(c, str) and c in by_name for c in cols):
            raise CompileError(f"transformer {name} selects columns {cols!r} not in the feature schema")
        kinds = {by_name[c].type == CATEGORICAL for c in cols}
        if kinds == {False}:
            if out.stop - out.start != len(cols):
                raise CompileError(f"numeric transformer {name} changes the number of columns")
            blocks.append(NumericBlock(list(cols), out, None, _numeric_ops(trans)))
        elif kinds == {True}:
            blocks.append(_categorical_block(trans, list(cols), out, by_name))
        else:
            raise CompileError(f"transformer {name} mixes numeric and categorical columns")
        covered[out] = True
    if not covered.all():
        raise CompileError("some output columns come from no compiled block")

    positive_column(est)
    if type(est).__name__ == "XGBClassifier":
        booster = est.get_booster()
        objective = est.get_params().get("objective")
        if objective not in ("binary:logistic", None):
            raise CompileError(f"XGBoost objective {objective!r}")
        booster.set_param({"nthread": threads})
        try:
            best = est.best_iteration
            iteration_range = (0, int(best) + 1)
        except AttributeError:
            iteration_range = (0, 0)

        def inplace(X: np.ndarray) -> np.ndarray:
            # width checked at compile time, result checked at load: no per-call feature validation
            out = booster.inplace_predict(X, iteration_range=iteration_range, validate_features=False)
            return np.asarray(out, dtype=np.float64).reshape(-1)

        dense = DensePredict.build(booster, iteration_range, width, inplace)

        def score(X: np.ndarray) -> np.ndarray:
            if dense is not None and dense.takes(X):
                return dense(X)
            return inplace(X)

        algorithm, matrix_dtype = "xgboost", np.float32
    elif isinstance(est, LogisticRegression):
        coef = np.asarray(est.coef_, dtype=np.float64)
        if coef.shape != (1, width):
            raise CompileError(f"LogisticRegression coef_ shape {coef.shape}")
        w, b = coef[0].copy(), float(est.intercept_[0])

        def score(X: np.ndarray) -> np.ndarray:
            return expit(X @ w + b)

        algorithm, matrix_dtype = "logistic_regression", np.float64
    else:
        raise CompileError(f"estimator {type(est).__name__}")
    return CompiledPredictor(blocks, width, score, algorithm, matrix_dtype)


def synthetic_records(specs: list[FieldSpec], n: int = 256, seed: int = 0) -> list[dict[str, Any]]:
    """Records covering every category, unseen categories, nulls and the numeric ranges."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        rec: dict[str, Any] = {}
        for s in specs:
            if s.nullable and rng.random() < 0.1:
                rec[s.name] = None
            elif s.type == CATEGORICAL:
                cats = list(s.categories) or ["x"]
                rec[s.name] = cats[i % len(cats)] if rng.random() < 0.9 else f"unseen-{rng.randint(0, 9)}"
            elif s.type == "binary":
                rec[s.name] = rng.randint(0, 1)
            else:
                lo = s.min if s.min is not None else -1000.0
                hi = s.max if s.max is not None else 1000.0
                rec[s.name] = rng.uniform(lo, hi) if rng.random() < 0.9 else rng.choice([lo, hi])
        records.append(rec)
    return records


def max_difference(
    a: PipelinePredictor | CompiledPredictor, b: PipelinePredictor | CompiledPredictor, batch: Validated
) -> float:
    return float(np.max(np.abs(a.predict(batch) - b.predict(batch))))
