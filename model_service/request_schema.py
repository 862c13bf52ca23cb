"""Request and response schemas derived from the model's feature schema, and the record validator.

The model version carries its feature schema (`feature_schema` in the logged model's metadata: name,
type numeric|binary|categorical, min, max, categories, nullable). From it, at load time, come:

- `FieldSpec`s (`core/feature_schema.py`, shared with the fast path and batch scoring): one per feature;
- marshmallow schemas (`record_schema`, `predict_request_schema`, `predict_response_schema`): the
  OpenAPI document and the reference semantics of a valid record;
- `RecordValidator`: the request-path validator. It checks a batch column by column (one type test
  per value, then vectorised range and finiteness checks) instead of one marshmallow field load per
  value, which costs ~25 us per record. A unit test checks that it accepts and rejects exactly what
  the marshmallow schema does, and that its messages name the record index and the field.

Rules: every non-nullable feature is required; a nullable one may be null or left out. numeric: a
JSON number (not a string, not a boolean), finite, inside [min, max] when declared. binary: 0 or 1
(1.0 accepted, true/false not). categorical: a string of at most `max_length` characters (the longest declared category + 32, at
least 64); a category the model did not see is accepted and reported (the model maps it like its
training did), not rejected. Unknown fields are rejected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from core.feature_schema import BINARY, CATEGORICAL, NUMERIC, FieldSpec, Validated

_MISSING = object()
_NOT_A_RECORD = object()
MAX_ERRORS = 50  # error details reported per request (the count is always complete)


# --------------------------------------------------------------------------- marshmallow schemas
class StrictNumber(fields.Float):
    """A JSON number only: no numeric strings, no booleans, no NaN or infinity."""

    default_error_messages = {"invalid": "Not a number.", "special": "Not a finite number."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        try:
            return super()._deserialize(value, attr, data, **kwargs)
        except OverflowError:  # an integer beyond float range
            raise self.make_error("special") from None


class BinaryFlag(fields.Number):
    """0 or 1 (as an integer or 1.0); booleans and strings are rejected."""

    num_type = int
    default_error_messages = {"invalid": "Must be 0 or 1."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float) or value not in (0, 1):
            raise self.make_error("invalid")
        return int(value)


class Category(fields.String):
    """A string; categories unknown to the model are accepted (and counted by the service)."""


def _describe(spec: FieldSpec) -> dict[str, Any]:
    if spec.type == CATEGORICAL:
        known = ", ".join(repr(c) for c in spec.categories)
        return {
            "description": f"categorical; known categories: {known} (others are accepted and "
            "counted as unknown)",
            "example": spec.categories[0] if spec.categories else "x",
        }
    if spec.type == BINARY:
        return {"description": "binary flag: 0 or 1", "example": 0}
    lo = 0.0 if spec.min is None else spec.min
    hi = lo + 1.0 if spec.max is None else spec.max
    return {
        "description": f"numeric in [{spec.min}, {spec.max}]" + (", or null" if spec.nullable else ""),
        "example": round(min(max(lo, 1.0), hi), 2),
    }


def field_example(spec: FieldSpec) -> Any:
    """A valid value of the field (its first category, 0, or a number inside its range)."""
    return _describe(spec)["example"]


def marshmallow_field(spec: FieldSpec) -> fields.Field:
    common: dict[str, Any] = {
        "required": spec.required,
        "allow_none": spec.nullable,
        "metadata": _describe(spec),
    }
    if spec.nullable:
        common["load_default"] = None
    if spec.type == NUMERIC:
        rng = (
            validate.Range(min=spec.min, max=spec.max)
            if spec.min is not None or spec.max is not None
            else None
        )
        return StrictNumber(allow_nan=False, validate=rng, **common)
    if spec.type == BINARY:
        return BinaryFlag(validate=validate.OneOf([0, 1]), **common)
    return Category(validate=validate.Length(max=spec.max_length), **common)


def record_schema(specs: list[FieldSpec], name: str = "PredictRecord") -> type[Schema]:
    cls = Schema.from_dict({s.name: marshmallow_field(s) for s in specs}, name=name)
    cls.Meta.unknown = RAISE  # type: ignore[attr-defined]
    return cls


def predict_request_schema(specs: list[FieldSpec], max_batch: int) -> type[Schema]:
    record = record_schema(specs)
    # the live example (the model's own record) is set by the service's /openapi.json
    example = {"example": [{s.name: field_example(s) for s in specs}]} if specs else {}

    class PredictRequest(Schema):
        class Meta:
            unknown = RAISE

        records = fields.List(
            fields.Nested(record),
            required=True,
            validate=validate.Length(min=1, max=max_batch),
            metadata={"description": f"1 to {max_batch} records (more: 413)", **example},
        )
        event_time = fields.DateTime(
            format="iso",
            metadata={
                "description": "when the scored event happened, in business time, for every record of the "
                "request: an RFC 3339 date-time with a UTC offset or Z (e.g. 2026-12-01T09:30:00Z), at most "
                "1 day after the server's clock (else 422). Stored as the records' event time. Default: "
                "the time the request is received."
            },
        )

    return PredictRequest


class Prediction(Schema):
    index = fields.Integer(required=True, metadata={"description": "position of the record in the request"})
    probability = fields.Float(required=True, metadata={"description": "probability of the positive class"})
    label = fields.Integer(required=True, metadata={"description": "1 when probability >= threshold"})
    unknown_categories = fields.List(
        fields.String(), metadata={"description": "features whose category the model did not see"}
    )


class PredictResponse(Schema):
    request_id = fields.String(required=True, metadata={"description": "also in the X-Request-ID header"})
    model_name = fields.String(required=True)
    model_version = fields.String(required=True)
    threshold = fields.Float(required=True)
    predictions = fields.List(fields.Nested(Prediction), required=True)


# --------------------------------------------------------------------------- request-path validator
class RecordErrors(Exception):
    """Invalid records: `messages` maps record index -> field -> messages (marshmallow's shape)."""

    def __init__(self, messages: dict[int, dict[str, list[str]]], count: int):
        super().__init__(f"{count} invalid value(s)")
        self.messages = messages
        self.count = count

    def fields(self) -> list[str]:
        return sorted({f for per in self.messages.values() for f in per})


def _absent_message(v: Any) -> str:
    """marshmallow's message for a required field that is missing (`_MISSING`) or null."""
    return "Missing data for required field." if v is _MISSING else "Field may not be null."


def _is_number(v: Any) -> bool:
    return (type(v) is float or type(v) is int) or (isinstance(v, int | float) and not isinstance(v, bool))


class RecordValidator:
    def __init__(self, specs: list[FieldSpec]):
        self.specs = specs
        self.names = [s.name for s in specs]
        self.name_set = frozenset(self.names)
        self.schema = record_schema(specs)()
        self.numeric_names = [s.name for s in specs if s.type != CATEGORICAL]
        self.categorical_specs = [s for s in specs if s.type == CATEGORICAL]
        self.column_index = {name: j for j, name in enumerate(self.numeric_names)}
        num = [s for s in specs if s.type != CATEGORICAL]
        self._lo = np.array([-np.inf if s.min is None else s.min for s in num], dtype=np.float64)
        self._hi = np.array([np.inf if s.max is None else s.max for s in num], dtype=np.float64)
        self._binary = np.array([s.type == BINARY for s in num], dtype=bool)
        self._nullable = [s.nullable for s in num]
        self._binary_names = [s.name for s in num if s.type == BINARY]
        self._row_checks = (self._lo.tolist(), self._hi.tolist(), self._binary.tolist())

    def validate(self, records: list[Any]) -> Validated:
        """Validate a batch; raises RecordErrors naming every invalid record and field."""
        fast = self._validate_complete(records)
        return fast if fast is not None else self._validate_general(records)

    def _validate_complete(self, records: list[Any]) -> Validated | None:
        """The common case in a handful of array operations: every record an object with exactly the
        model's fields, no nulls, every value valid. Anything else returns None and goes through
        `_validate_general` (which also writes the error messages); the two agree (unit-tested)."""
        names, name_set = self.numeric_names, self.name_set
        for r in records:
            if type(r) is not dict or r.keys() != name_set:
                return None
        try:
            rows = [[r[n] for n in names] for r in records]
        except KeyError:
            return None
        nulls = []  # (row, column) of a null in a nullable column: 0.0 while checking, NaN after
        nullable = self._nullable
        for i, row in enumerate(rows):
            for v in row:
                if type(v) is not float and type(v) is not int:
                    break
            else:
                continue
            for j, v in enumerate(row):
                if type(v) is not float and type(v) is not int:
                    if v is None and nullable[j]:
                        row[j] = 0.0
                        nulls.append((i, j))
                    else:
                        return None
        try:
            matrix = np.array(rows, dtype=np.float64).reshape(len(records), len(names))
        except OverflowError:
            return None
        if len(records) == 1:  # the same checks on the same float64 values, without numpy calls
            for v, lo, hi, binary in zip(matrix[0].tolist(), *self._row_checks, strict=True):
                if not (math.isfinite(v) and lo <= v <= hi) or (binary and v != 0.0 and v != 1.0):
                    return None
        else:
            with np.errstate(invalid="ignore"):
                if not np.isfinite(matrix).all() or (matrix < self._lo).any() or (matrix > self._hi).any():
                    return None
                if self._binary.any():
                    b = matrix[:, self._binary]
                    if not ((b == 0.0) | (b == 1.0)).all():
                        return None
        if nulls:
            rows_idx, cols_idx = zip(*nulls, strict=True)
            matrix[list(rows_idx), list(cols_idx)] = np.nan
        categorical: dict[str, list[str | None]] = {}
        unknown: dict[str, list[int]] = {}
        for spec in self.categorical_specs:
            col = [r[spec.name] for r in records]
            known = spec.category_set  # strings only: a value found in it is a known string
            try:
                miss = [i for i, v in enumerate(col) if v not in known]
            except TypeError:  # an unhashable value (list, object)
                return None
            if miss:  # only these need a type check: nulls, unknown strings, anything else
                cap, nullable, new = spec.max_length, spec.nullable, []
                for i in miss:
                    v = col[i]
                    if type(v) is str:
                        if len(v) > cap:
                            return None
                        new.append(i)
                    elif not (v is None and nullable):
                        return None
                if new:
                    unknown[spec.name] = new
            categorical[spec.name] = col
        for name in self._binary_names:  # 1.0 -> 1 in the logged record
            for r in records:
                if type(r[name]) is not int:
                    r[name] = int(r[name])
        numeric = {name: matrix[:, j] for j, name in enumerate(names)}
        return Validated(len(records), numeric, categorical, records, unknown, matrix, self.column_index)

    def _validate_general(self, records: list[Any]) -> Validated:
        errors: dict[int, dict[str, list[str]]] = {}
        count = 0

        def add(i: int, name: str, message: str) -> None:
            nonlocal count
            count += 1
            if len(errors) < MAX_ERRORS or i in errors:
                errors.setdefault(i, {}).setdefault(name, []).append(message)

        for i, rec in enumerate(records):
            if type(rec) is not dict:
                add(i, "_schema", "Invalid input type: each record must be a JSON object.")
                continue
            if rec.keys() - self.name_set:
                for extra in sorted(rec.keys() - self.name_set)[:5]:
                    add(i, extra, "Unknown field.")
        # every field of every object record is still checked, so one response names every problem
        numeric: dict[str, np.ndarray] = {}
        categorical: dict[str, list[str | None]] = {}
        unknown: dict[str, list[int]] = {}
        for spec in self.specs:
            name = spec.name
            col = [r.get(name, _MISSING) if type(r) is dict else _NOT_A_RECORD for r in records]
            if spec.type == CATEGORICAL:
                bad = [i for i, v in enumerate(col) if type(v) is not str]
                for i in bad:
                    v = col[i]
                    if v is _NOT_A_RECORD:
                        continue
                    if v is _MISSING or v is None:
                        if spec.nullable:
                            col[i] = None
                        else:
                            add(i, name, _absent_message(v))
                    else:
                        add(i, name, "Not a valid string.")
                known = spec.category_set
                miss = [i for i, v in enumerate(col) if type(v) is str and v not in known]
                cap = spec.max_length
                too_long = [i for i in miss if len(col[i]) > cap]
                for i in too_long:
                    add(i, name, f"Longer than maximum length {cap}.")
                if too_long:
                    miss = [i for i in miss if len(col[i]) <= cap]
                if miss:
                    unknown[name] = miss
                categorical[name] = col
                continue
            # numeric and binary: one type test per value, then vectorised checks
            skip = None
            try:
                arr = (
                    np.asarray(col, dtype=np.float64)
                    if all(type(v) is float or type(v) is int for v in col)
                    else None
                )
            except OverflowError:  # an integer beyond float range
                arr = None
            if arr is None:
                values, skip = [], np.zeros(len(col), dtype=bool)
                for i, v in enumerate(col):
                    if v is _NOT_A_RECORD:
                        skip[i] = True
                        values.append(math.nan)
                        continue
                    if v is _MISSING or v is None:
                        skip[i] = True
                        values.append(math.nan)
                        if not spec.nullable:
                            add(i, name, _absent_message(v))
                        else:
                            col[i] = None
                        continue
                    if not _is_number(v):
                        add(i, name, "Must be 0 or 1." if spec.type == BINARY else "Not a number.")
                        skip[i] = True
                        values.append(math.nan)
                        continue
                    try:
                        values.append(float(v))
                    except OverflowError:
                        add(i, name, "Not a finite number.")
                        skip[i] = True
                        values.append(math.nan)
                arr = np.asarray(values, dtype=np.float64)
            checked = ~skip if skip is not None else np.ones(len(arr), dtype=bool)
            if spec.type == BINARY:
                for i in np.flatnonzero(checked & (arr != 0.0) & (arr != 1.0))[:MAX_ERRORS]:
                    add(int(i), name, "Must be 0 or 1.")
            else:
                finite = np.isfinite(arr)
                for i in np.flatnonzero(checked & ~finite)[:MAX_ERRORS]:
                    add(int(i), name, "Not a finite number.")
                if spec.min is not None or spec.max is not None:
                    with np.errstate(invalid="ignore"):
                        out = np.zeros(len(arr), dtype=bool)
                        if spec.min is not None:
                            out |= arr < spec.min
                        if spec.max is not None:
                            out |= arr > spec.max
                    for i in np.flatnonzero(checked & finite & out)[:MAX_ERRORS]:
                        add(int(i), name, _range_message(spec))
            numeric[name] = arr
        if count:
            raise RecordErrors(errors, count)
        out = records  # parsed from this request's JSON: ours to normalise in place
        for spec in self.specs:
            if spec.nullable:
                for r in out:
                    if spec.name not in r:
                        r[spec.name] = None
            if spec.type == BINARY:
                name = spec.name
                for r in out:
                    if type(r[name]) is not int:  # 1.0 -> 1
                        r[name] = int(r[name])
        return Validated(len(records), numeric, categorical, out, unknown)

    def reference_errors(self, record: Any) -> dict[str, list[str]]:
        """marshmallow's verdict on one record ({} when valid): the reference the tests compare with."""
        try:
            self.schema.load(record)
        except ValidationError as exc:
            msgs = exc.messages
            return msgs if isinstance(msgs, dict) else {"_schema": list(msgs)}
        return {}


def _range_message(spec: FieldSpec) -> str:
    if spec.min is not None and spec.max is not None:
        return f"Must be greater than or equal to {spec.min:g} and less than or equal to {spec.max:g}."
    if spec.min is not None:
        return f"Must be greater than or equal to {spec.min:g}."
    return f"Must be less than or equal to {spec.max:g}."
