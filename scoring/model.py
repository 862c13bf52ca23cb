"""The model a batch scores with: a registry alias or version, compiled to the fast path and checked.

`load(settings)` resolves SCORE_MODEL (an alias such as `champion`, or a version number) in the
registry, loads the logged sklearn pipeline and its metadata (threshold, feature schema), compiles the
pipeline with `core.fastpath.compile_pipeline` (the service's fast path) and checks the compiled
model, through the batch path itself (Arrow columns -> `BatchScorer`), against the pipeline's
`predict_proba` on synthetic records covering every category, unseen categories, missing values and
the range edges. A model the fast path cannot reproduce to 1e-6 is refused (exit 1 from the command
line), never scored some other way silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa

from core import registry
from core.fastpath import (
    TOLERANCE,
    CompiledPredictor,
    CompileError,
    compile_pipeline,
    synthetic_records,
    to_frame,
)
from core.feature_schema import CATEGORICAL, FieldSpec, Validated, field_specs
from scoring.table import BatchScorer


class ModelError(RuntimeError):
    """The model cannot be found or scored by the batch path; the message is one line."""


@dataclass
class ScoringModel:
    name: str
    version: str
    alias: str | None
    run_id: str | None
    threshold: float
    specs: list[FieldSpec]
    metadata: dict[str, Any]
    compiled: CompiledPredictor
    check_difference: float

    def scorer(self, keys: tuple[str, ...]) -> BatchScorer:
        return BatchScorer(self.compiled, self.specs, keys, self.threshold, self.name, self.version)


def resolve(name: str, model: str) -> tuple[str, str | None, str | None]:
    """(version, alias or None, run id) of SCORE_MODEL: digits are a version, anything else an alias."""
    if model.isdigit():
        try:
            mv = registry.get_version(name, model)
        except registry.RegistryError as exc:
            raise ModelError(str(exc)) from None
        return str(mv.version), None, mv.run_id
    mv = registry.version_by_alias(name, model, strict=True)
    if mv is None:
        raise ModelError(f"model '{name}' has no alias '{model}': train and gate a model, or name a version")
    return str(mv.version), model, mv.run_id


def records_table(records: list[dict[str, Any]], specs: list[FieldSpec]) -> pa.Table:
    """Records (the service's JSON shape) as the Arrow table a file of them would be."""
    columns = {}
    for s in specs:
        values = [r.get(s.name) for r in records]
        columns[s.name] = pa.array(values, pa.string() if s.type == CATEGORICAL else pa.float64())
    return pa.table(columns)


def check_against_pipeline(pipeline: Any, compiled: CompiledPredictor, specs: list[FieldSpec]) -> float:
    """Largest |difference| between the batch path and `pipeline.predict_proba` on synthetic records."""
    records = synthetic_records(specs, 512, seed=7)
    table = records_table(records, specs)
    scorer = BatchScorer(compiled, specs, (), 0.5, "check", "0")
    prepared = scorer.prepare(table.to_batches()[0] if table.num_rows else table)
    if prepared.rejected().any():
        raise ModelError("the model's own synthetic records fail its schema in the batch path")
    batch = Validated(
        len(records),
        {
            s.name: np.array([np.nan if r[s.name] is None else r[s.name] for r in records], np.float64)
            for s in specs
            if s.type != CATEGORICAL
        },
        {s.name: [r[s.name] for r in records] for s in specs if s.type == CATEGORICAL},
        records,
        {},
    )
    expected = np.asarray(pipeline.predict_proba(to_frame(batch, specs)), dtype=np.float64)[:, 1]
    return float(np.max(np.abs(scorer.probabilities(prepared) - expected)))


@dataclass
class Described:
    """What the registry says about the version to score with (no artifact downloaded yet)."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    metadata: dict[str, Any]
    specs: list[FieldSpec]
    threshold: float


def describe(name: str, model: str) -> Described:
    """The version SCORE_MODEL names, its feature schema and threshold: enough to check the input's
    columns before any work."""
    version, alias, run_id = resolve(name, model)
    metadata = registry.model_metadata(name, version)
    try:
        specs = field_specs(metadata.get("feature_schema"))
    except ValueError as exc:
        raise ModelError(f"model '{name}' v{version}: {exc}") from None
    if "threshold" not in metadata:
        raise ModelError(f"model '{name}' v{version} has no threshold in its metadata")
    return Described(name, version, alias, run_id, metadata, specs, float(metadata["threshold"]))


def load(described: Described, threads: int) -> ScoringModel:
    """The described version's pipeline, compiled to the fast path and checked against itself."""
    d = described
    pipeline = mlflow.sklearn.load_model(registry.model_uri(d.name, d.version))
    try:
        compiled = compile_pipeline(pipeline, d.specs, threads=threads)
    except CompileError as exc:
        raise ModelError(f"model '{d.name}' v{d.version} does not compile to the fast path: {exc}") from None
    diff = check_against_pipeline(pipeline, compiled, d.specs)
    if not diff <= TOLERANCE:
        raise ModelError(
            f"model '{d.name}' v{d.version}: the batch path differs from the pipeline by {diff:.2e}"
        )
    return ScoringModel(
        d.name, d.version, d.alias, d.run_id, d.threshold, d.specs, d.metadata, compiled, diff
    )
