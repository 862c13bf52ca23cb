"""One Arrow record batch in, its scores and its rejected rows out: the engine-free part of batch scoring.

`BatchScorer.score(batch)` checks every row against the model's feature schema with Arrow compute
kernels and numpy (no Python loop over rows), turns the valid ones into the fast path's arrays (numeric
and binary features as one float64 matrix, each categorical feature as codes from `pc.index_in`) and
scores them with the same `CompiledPredictor.transform_arrays` the service's fast path runs
(`core/fastpath.py`). Both engines call it: the in-process one on the batches it streams, Spark on
the batches `mapInArrow` hands each task.

A row's values, as a table carries them (the service's JSON rules, read for columns):
- numeric and binary: a number column (integers, floats, booleans as 0/1) or a string column whose
  values parse as numbers (CSV is read as strings); null, NaN or an empty string is a missing value;
- categorical: a string column (integers are taken as their decimal string, as the data set's loader
  does); null is a missing value; a category the model did not see is scored (the model maps it as
  its training did) and counted;
- a missing value in a feature the schema does not declare nullable, a value outside the declared
  [min, max], a binary value other than 0 or 1, a number that does not parse or is not finite, or a
  category longer than the service accepts rejects the row, with one reason per failed field.

The columns themselves are checked once, before any row is read (`check_columns`): every feature and
key column present, with a type the rules above can read. Other columns are ignored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.fastpath import CategoricalBlock, CompiledPredictor
from core.feature_schema import BINARY, CATEGORICAL, FieldSpec

PROBABILITY, LABEL, MODEL_NAME, MODEL_VERSION = "probability", "label", "model_name", "model_version"
ROW, REASON = "row", "reason"
_REUSED_ROWS = 4096  # batches at least this large keep their thread's matrix for the next one
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


class ColumnError(ValueError):
    """The input's columns do not fit the model: one line naming every problem."""


def _is_number_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)


def _is_string_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_string_type(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def check_columns(schema: pa.Schema, specs: list[FieldSpec], keys: tuple[str, ...]) -> None:
    """Raise ColumnError naming every missing key or feature column and every unreadable type."""
    names = set(schema.names)
    problems = []
    missing_keys = [k for k in keys if k not in names]
    if missing_keys:
        problems.append(f"key column(s) missing: {', '.join(missing_keys)}")
    missing = [s.name for s in specs if s.name not in names]
    if missing:
        problems.append(f"feature column(s) missing: {', '.join(missing)}")
    wanted = {*keys, *(s.name for s in specs)}
    duplicated = sorted(n for n in wanted if len(schema.get_all_field_indices(n)) > 1)
    if duplicated:
        problems.append(f"column(s) named twice: {', '.join(duplicated)}")
    for spec in specs:
        if spec.name not in names or spec.name in duplicated:
            continue
        t = schema.field(spec.name).type
        if spec.type == CATEGORICAL:
            ok = _is_string_type(t) or pa.types.is_integer(t) or pa.types.is_null(t)
            want = "strings"
        else:
            ok = _is_number_type(t) or _is_string_type(t)
            want = "numbers"
        if not ok:
            problems.append(f"column {spec.name} is {t}, the model reads {want}")
    if problems:
        expected = ", ".join(s.name for s in specs)
        raise ColumnError(
            f"the input does not fit the model: {'; '.join(problems)} (the model reads: {expected})"
        )


def output_schema(input_schema: pa.Schema, keys: tuple[str, ...]) -> pa.Schema:
    return pa.schema(
        [
            *[input_schema.field(k) for k in keys],
            pa.field(PROBABILITY, pa.float64()),
            pa.field(LABEL, pa.int64()),
            pa.field(MODEL_NAME, pa.string()),
            pa.field(MODEL_VERSION, pa.string()),
        ]
    )


def reject_schema(keys: tuple[str, ...], specs: list[FieldSpec]) -> pa.Schema:
    """Rejected rows: the input row number, the reason, the key and feature values as text."""
    names = [*keys, *[s.name for s in specs if s.name not in keys]]
    return pa.schema(
        [pa.field(ROW, pa.int64()), pa.field(REASON, pa.string())] + [pa.field(n, pa.string()) for n in names]
    )


@dataclass
class Prepared:
    """A batch's arrays for the fast path, and the rows it rejects."""

    n: int
    numeric: np.ndarray  # (n, k) float64, NaN: missing
    codes: dict[str, np.ndarray]
    checks: list[tuple[str, np.ndarray, str]]  # (feature, mask of failing rows, message)
    unseen: dict[str, int] = field(
        default_factory=dict
    )  # feature -> rows with a category the model did not see
    proba: np.ndarray | None = None  # after `BatchScorer.score`: the kept rows' probabilities
    kept: np.ndarray | None = None  # after `BatchScorer.score`: mask of the rows not rejected

    def rejected(self) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        for _, bad, _ in self.checks:
            mask |= bad
        return mask

    def reasons(self, rows: np.ndarray) -> list[str]:
        """One reason per rejected row (`rows`: their indices), every failed field named."""
        per_row: dict[int, list[str]] = {int(i): [] for i in rows}
        for name, bad, message in self.checks:
            for i in np.flatnonzero(bad):
                per_row[int(i)].append(f"{name}: {message}")
        return ["; ".join(per_row[int(i)]) for i in rows]


def _as_float(column: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """A column as float64 (NaN: missing) and the mask of values that are not numbers (strings only)."""
    t = column.type
    if pa.types.is_dictionary(t):
        column, t = column.cast(t.value_type), t.value_type
    if _is_string_type(t):
        parses = pc.fill_null(pc.match_substring_regex(column, _NUMBER), True)
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), False)
        not_number = pc.and_(pc.invert(parses), pc.invert(blank))
        keep = pc.and_(parses, pc.invert(blank))
        column = pc.cast(pc.utf8_trim_whitespace(pc.if_else(keep, column, pa.scalar(None, t))), pa.float64())
        bad = not_number.to_numpy(zero_copy_only=False)
        return column.to_numpy(zero_copy_only=False).astype(
            np.float64, copy=False
        ), bad if bad.any() else None
    if not pa.types.is_float64(t):
        column = pc.cast(column, pa.float64())
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False), None


def _longer(strings: pa.Array, limit: int) -> np.ndarray:
    return pc.fill_null(pc.greater(pc.utf8_length(strings), limit), False).to_numpy(zero_copy_only=False)


def _as_strings(column: pa.Array) -> pa.Array:
    t = column.type
    if pa.types.is_dictionary(t) or not pa.types.is_string(t):
        return pc.cast(column, pa.string())
    return column


class BatchScorer:
    """Checks and scores record batches with one compiled model."""

    def __init__(
        self,
        compiled: CompiledPredictor,
        specs: list[FieldSpec],
        keys: tuple[str, ...],
        threshold: float,
        model_name: str,
        model_version: str,
    ):
        self.compiled = compiled
        self.specs = specs
        self.keys = keys
        self.threshold = float(threshold)
        self.model_name = model_name
        self.model_version = str(model_version)
        self.numeric_names = [s.name for s in specs if s.type != CATEGORICAL]
        self.column_index = {n: j for j, n in enumerate(self.numeric_names)}
        self._categories: dict[str, tuple[pa.Array, int, int]] = {}
        for block in compiled.blocks:
            if isinstance(block, CategoricalBlock):
                for j, col in enumerate(block.columns):
                    self._categories[col] = (
                        pa.array(block.values[j], pa.string()),
                        block.missing_code(j),
                        block.unseen_code(j),
                    )
        self._constants: tuple[pa.Array, pa.Array] | None = None
        self._local = threading.local()  # each scoring thread's matrix, refilled batch after batch

    def __getstate__(self) -> dict[str, Any]:
        """Spark ships the scorer to its executors pickled: without the threads' matrices."""
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    # ------------------------------------------------------------------ checks and arrays
    def prepare(self, batch: pa.RecordBatch) -> Prepared:
        n = batch.num_rows
        numeric = np.empty((n, len(self.numeric_names)), dtype=np.float64, order="F")
        checks: list[tuple[str, np.ndarray, str]] = []
        codes: dict[str, np.ndarray] = {}
        unseen: dict[str, int] = {}
        for spec in self.specs:
            column = batch.column(spec.name)
            if spec.type == CATEGORICAL:
                codes[spec.name], seen_not = self._codes(spec, column, checks)
                if seen_not:
                    unseen[spec.name] = seen_not
                continue
            values, not_number = _as_float(column)
            if not_number is None and np.isfinite(values).all():
                self._check_complete(spec, values, checks)  # the common case: reductions only
            else:
                values = self._check_general(spec, values, not_number, checks)
            numeric[:, self.column_index[spec.name]] = values
        return Prepared(n, numeric, codes, checks, unseen)

    @staticmethod
    def _check_complete(spec: FieldSpec, values: np.ndarray, checks: list) -> None:
        """Checks of a column with no missing, unparsable or infinite value: a mask only on failure."""
        if spec.type == BINARY:
            if np.count_nonzero(values) != np.count_nonzero(values == 1.0):
                checks.append((spec.name, (values != 0.0) & (values != 1.0), "must be 0 or 1"))
            return
        if spec.min is not None and values.min() < spec.min:
            checks.append((spec.name, values < spec.min, f"below the minimum {spec.min:g}"))
        if spec.max is not None and values.max() > spec.max:
            checks.append((spec.name, values > spec.max, f"above the maximum {spec.max:g}"))

    @staticmethod
    def _check_general(
        spec: FieldSpec, values: np.ndarray, not_number: np.ndarray | None, checks: list
    ) -> np.ndarray:
        """Checks of a column with missing, unparsable or infinite values; returns it with NaN for each."""
        if not_number is not None:
            checks.append((spec.name, not_number, "not a number"))
        infinite = np.isinf(values)
        if infinite.any():
            checks.append((spec.name, infinite, "not a finite number"))
            values = np.where(infinite, np.nan, values)
        missing = np.isnan(values)
        if not_number is not None:
            missing &= ~not_number
        missing &= ~infinite
        if not spec.nullable and missing.any():
            checks.append((spec.name, missing, "missing value (the model's schema requires one)"))
        present = ~np.isnan(values)
        with np.errstate(invalid="ignore"):
            if spec.type == BINARY:
                off = present & (values != 0.0) & (values != 1.0)
                if off.any():
                    checks.append((spec.name, off, "must be 0 or 1"))
            else:
                if spec.min is not None and (low := present & (values < spec.min)).any():
                    checks.append((spec.name, low, f"below the minimum {spec.min:g}"))
                if spec.max is not None and (high := present & (values > spec.max)).any():
                    checks.append((spec.name, high, f"above the maximum {spec.max:g}"))
        return values

    def _codes(
        self, spec: FieldSpec, column: pa.Array, checks: list[tuple[str, np.ndarray, str]]
    ) -> tuple[np.ndarray, int]:
        """The fast path's codes of a categorical column (known value, missing or unseen) and how many
        rows hold a category the model did not see. A dictionary-encoded column (Parquet and CSV are
        read so) is coded once per distinct value, then spread to the rows by its indices."""
        known, missing_code, unseen_code = self._categories[spec.name]
        if pa.types.is_dictionary(column.type):
            values = _as_strings(column.dictionary)
            per_value = self._value_codes(values, known, missing_code, unseen_code)
            long_value = _longer(values, spec.max_length)
            indices = column.indices
            if indices.null_count:
                indices = pc.fill_null(indices, len(values))
                per_value = np.append(per_value, missing_code)
                long_value = np.append(long_value, False)
            indices = indices.to_numpy(zero_copy_only=False)
            codes = per_value[indices]
            too_long = long_value[indices] if long_value.any() else None
            may_miss = column.null_count or values.null_count
            may_unseen = bool((per_value == unseen_code).any())
        else:
            strings = _as_strings(column)
            codes = self._value_codes(strings, known, missing_code, unseen_code)
            too_long = _longer(strings, spec.max_length)
            too_long = too_long if too_long.any() else None
            may_miss, may_unseen = strings.null_count, True
        if not spec.nullable and may_miss:
            checks.append(
                (spec.name, codes == missing_code, "missing value (the model's schema requires one)")
            )
        if too_long is not None:
            checks.append((spec.name, too_long, f"longer than {spec.max_length} characters"))
        return codes, int(np.count_nonzero(codes == unseen_code)) if may_unseen else 0

    @staticmethod
    def _value_codes(values: pa.Array, known: pa.Array, missing_code: int, unseen_code: int) -> np.ndarray:
        index = pc.index_in(values, value_set=known)
        coded = pc.if_else(values.is_null(), missing_code, pc.fill_null(index, unseen_code))
        return coded.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)

    # ------------------------------------------------------------------ scores
    def matrix(self, prepared: Prepared, out: np.ndarray | None = None) -> np.ndarray:
        """The model's input matrix of a prepared batch: column-major (faster to fill), of the narrowest
        dtype the estimator reads the same (`CompiledPredictor.matrix_dtype`); into `out` if given."""
        return self.compiled.transform_arrays(
            prepared.n,
            prepared.numeric,
            self.column_index,
            prepared.codes,
            order="F",
            dtype=self.compiled.matrix_dtype,
            out=out,
        )

    def probabilities(self, prepared: Prepared) -> np.ndarray:
        """P(positive) of every row of a prepared batch (rejected rows too: the caller drops them).

        The matrix lives only for this call, so each thread fills one of its own again and again (a
        batch's matrix is the largest allocation of the loop: a new one per batch page-faults every
        page of it in, about 50,000 faults per million rows)."""
        buffer = getattr(self._local, "matrix", None)
        if buffer is None or buffer.shape[0] != prepared.n:
            buffer = np.empty((prepared.n, self.compiled.width), dtype=self.compiled.matrix_dtype, order="F")
            if prepared.n >= _REUSED_ROWS:
                self._local.matrix = buffer
        return self.compiled.score(self.matrix(prepared, out=buffer))

    def _constant_columns(self, n: int) -> tuple[pa.Array, pa.Array]:
        if self._constants is None or len(self._constants[0]) < n:
            size = max(n, 1024)
            self._constants = (
                pa.array([self.model_name] * size, pa.string()),
                pa.array([self.model_version] * size, pa.string()),
            )
        return self._constants[0].slice(0, n), self._constants[1].slice(0, n)

    def score(
        self, batch: pa.RecordBatch, first_row: int = 0
    ) -> tuple[pa.RecordBatch, pa.RecordBatch | None, Prepared]:
        """(scored rows, rejected rows or None, the `Prepared` batch with the scores as `.proba`)."""
        prepared = self.prepare(batch)
        proba = self.probabilities(prepared)
        rejected = prepared.rejected()
        keys = [batch.column(k) for k in self.keys]
        rejects = None
        if rejected.any():
            rows = np.flatnonzero(rejected)
            rejects = self.rejects(batch, rows, prepared.reasons(rows), first_row)
            keep = pa.array(~rejected)
            prepared.unseen = {  # counted among the scored rows only
                name: n
                for name in prepared.unseen
                if (n := int(np.count_nonzero(prepared.codes[name][~rejected] == self._categories[name][2])))
            }
            keys = [k.filter(keep) for k in keys]
            proba = proba[~rejected]
        labels = (proba >= self.threshold).astype(np.int64)
        name, version = self._constant_columns(len(proba))
        out = pa.RecordBatch.from_arrays(
            [*keys, pa.array(proba, pa.float64()), pa.array(labels, pa.int64()), name, version],
            schema=output_schema(batch.schema, self.keys),
        )
        prepared.proba, prepared.kept = proba, ~rejected
        return out, rejects, prepared

    def rejects(
        self, batch: pa.RecordBatch, rows: np.ndarray, reasons: list[str], first_row: int
    ) -> pa.RecordBatch:
        schema = reject_schema(self.keys, self.specs)
        take = pa.array(rows)
        columns = [pa.array(rows + first_row, pa.int64()), pa.array(reasons, pa.string())]
        for name in schema.names[2:]:
            columns.append(pc.cast(batch.column(name).take(take), pa.string()))
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def records(self, batch: pa.RecordBatch, rows: np.ndarray) -> list[dict[str, Any]]:
        """Some rows as the service logs a record (null for missing, categories as strings, binary
        flags as 0/1, numbers as floats): the monitor's sample."""
        prepared = self.prepare(batch.take(pa.array(rows)))
        out = []
        columns = {
            s.name: _as_strings(batch.column(s.name).take(pa.array(rows))).to_pylist()
            for s in self.specs
            if s.type == CATEGORICAL
        }
        for i in range(len(rows)):
            record: dict[str, Any] = {}
            for spec in self.specs:
                if spec.type == CATEGORICAL:
                    record[spec.name] = columns[spec.name][i]
                else:
                    v = prepared.numeric[i, self.column_index[spec.name]]
                    record[spec.name] = None if np.isnan(v) else (int(v) if spec.type == BINARY else float(v))
            out.append(record)
        return out
