"""A model version's feature schema, shared by everything that scores records.

The model version carries its feature schema (`feature_schema` in the logged model's metadata: name,
type numeric|binary|categorical, min, max, categories, nullable). `field_specs` turns it into
`FieldSpec`s, the single derivation the service's request schemas and validator
(`model_service/request_schema.py`), the numpy fast path (`core/fastpath.py`) and batch scoring
(`scoring/`) use. `Validated` is a valid batch column by column, the fast path's input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NUMERIC, BINARY, CATEGORICAL = "numeric", "binary", "categorical"
CATEGORY_MARGIN = 32  # characters beyond the longest declared category a categorical value may have
CATEGORY_MIN_CAP = 64


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    category_set: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @property
    def required(self) -> bool:
        return not self.nullable

    @property
    def max_length(self) -> int:
        """Longest string a categorical field accepts: the longest declared category plus a margin
        (CATEGORY_MARGIN), at least CATEGORY_MIN_CAP characters; longer is a 422, not a new category."""
        longest = max((len(c) for c in self.categories), default=0)
        return max(CATEGORY_MIN_CAP, longest + CATEGORY_MARGIN)


class SchemaError(ValueError):
    """The model's feature schema is missing or malformed (the model cannot be served)."""


def field_specs(feature_schema: Any) -> list[FieldSpec]:
    if not isinstance(feature_schema, list) or not feature_schema:
        raise SchemaError("model metadata has no feature_schema list")
    specs, seen = [], set()
    for i, raw in enumerate(feature_schema):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise SchemaError(f"feature_schema[{i}] has no name")
        name, kind = raw["name"], raw.get("type")
        if kind not in (NUMERIC, BINARY, CATEGORICAL):
            raise SchemaError(f"feature_schema[{i}] ({name}) has unknown type {kind!r}")
        if name in seen:
            raise SchemaError(f"feature_schema lists {name!r} twice")
        seen.add(name)
        cats = tuple(str(c) for c in raw.get("categories") or ())
        specs.append(
            FieldSpec(
                name=name,
                type=kind,
                nullable=bool(raw.get("nullable", False)),
                min=None if raw.get("min") is None else float(raw["min"]),
                max=None if raw.get("max") is None else float(raw["max"]),
                categories=cats,
                category_set=frozenset(cats),
            )
        )
    return specs


@dataclass
class Validated:
    """A valid batch, column by column (numeric and binary as float64 with NaN for null)."""

    n: int
    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[str | None]]
    records: list[dict[str, Any]]  # normalised records, as logged
    unknown: dict[str, list[int]]  # feature -> indices of records with an unknown category
    matrix: np.ndarray | None = None  # numeric and binary columns as one (n, k) array (fast path)
    column_index: dict[str, int] = field(default_factory=dict)  # feature -> column of `matrix`
