"""Batch scoring's engine-free part (scoring/table.py, scoring/job.py) on small models fitted here: the
scores equal the service's fast path, every bad value rejects its row with a reason naming the field, a
wrong column set is one error naming every problem, and the sample for the monitor is uniform-sized."""

from __future__ import annotations

import io
import math

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from core.dataset import load_config
from core.fastpath import compile_pipeline, synthetic_records, to_frame
from core.feature_schema import CATEGORICAL, field_specs
from core.features import build_preprocessor
from core.settings import REPO_ROOT
from model_service.request_schema import RecordValidator
from model_service.served_model import build_loaded_model
from scoring.job import MonitorSample, Progress, Source, open_source
from scoring.model import Described, check_against_pipeline, records_table
from scoring.table import BatchScorer, ColumnError, check_columns

CONFIG = load_config(REPO_ROOT / "config" / "telco_churn.yaml")
META = {"feature_schema": [f.as_dict() for f in CONFIG.features], "threshold": 0.4, "algorithm": "x"}
SPECS = field_specs(META["feature_schema"])
KEYS = ("customer_id",)


def _pipeline(kind: str):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    X = to_frame(RecordValidator(SPECS).validate(synthetic_records(SPECS, 400, seed=3)), SPECS)
    y = (X["tenure"].fillna(0) < 40).astype(int).to_numpy() ^ (np.arange(len(X)) % 7 == 0)
    if kind == "xgboost":
        model = XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1)
        return Pipeline([("preprocess", build_preprocessor(CONFIG, scale=False)), ("model", model)]).fit(X, y)
    model = LogisticRegression(max_iter=500)
    return Pipeline([("preprocess", build_preprocessor(CONFIG, scale=True)), ("model", model)]).fit(X, y)


@pytest.fixture(scope="module", params=["xgboost", "logreg"])
def pipeline(request):
    return _pipeline(request.param)


def _scorer(pipeline) -> BatchScorer:
    return BatchScorer(compile_pipeline(pipeline, SPECS), SPECS, KEYS, 0.4, "telco-churn", "7")


def _table(records: list[dict]) -> pa.Table:
    table = records_table(records, SPECS)
    return table.add_column(0, "customer_id", pa.array([f"c{i}" for i in range(len(records))]))


def test_scores_equal_the_service_fast_path_with_nulls_and_unseen_categories(pipeline, tmp_path):
    records = synthetic_records(SPECS, 3000, seed=11)  # every category, unseen ones, nulls, range edges
    served = build_loaded_model("telco-churn", "7", "champion", pipeline, {**META, "threshold": 0.4})
    assert served.predictor.kind == "numpy"
    expected = served.predict(served.validator.validate([dict(r) for r in records]))
    # through a Parquet file, read as the engine reads it (categories dictionary-encoded), in 3 batches
    pq.write_table(_table(records), tmp_path / "in.parquet")
    described = Described("telco-churn", "7", "champion", None, META, SPECS, 0.4)
    source = open_source(tmp_path / "in.parquet", KEYS, described)
    assert pa.types.is_dictionary(source.schema.field("contract").type)
    scorer = _scorer(pipeline)
    parts = [scorer.score(b)[0] for b in source.batches(1024)]
    assert len(parts) == 3
    out = pa.Table.from_batches(parts)
    assert out.column_names == ["customer_id", "probability", "label", "model_name", "model_version"]
    np.testing.assert_allclose(out["probability"].to_numpy(), expected, rtol=0, atol=1e-6)
    assert out["label"].to_pylist() == served.labels(expected).tolist()
    assert set(out["model_version"].to_pylist()) == {"7"} and set(out["model_name"].to_pylist()) == {
        "telco-churn"
    }
    # plain string columns (no dictionary) give the same numbers
    plain = scorer.score(_table(records).to_batches(max_chunksize=5000)[0])[0]
    np.testing.assert_array_equal(plain["probability"].to_numpy(), out["probability"].to_numpy())


def test_the_batch_matrix_is_as_narrow_as_the_estimator_reads_with_the_same_scores(pipeline):
    """XGBoost reads float32 (it rounds a float64 matrix value by value): the batch path builds a float32
    column-major matrix for it and gets exactly the scores of the service's float64 row-major one; the
    linear model keeps float64 (its dot product may sum a column-major matrix in another order: 1e-16)."""
    scorer = _scorer(pipeline)
    compiled = scorer.compiled
    prepared = scorer.prepare(_table(synthetic_records(SPECS, 2000, seed=5)).to_batches()[0])
    args = (prepared.n, prepared.numeric, scorer.column_index, prepared.codes)
    narrow = scorer.matrix(prepared)
    wide = compiled.transform_arrays(*args, order="C")
    assert narrow.dtype == (np.float32 if compiled.algorithm == "xgboost" else np.float64)
    assert narrow.flags.f_contiguous and wide.dtype == np.float64
    np.testing.assert_array_equal(narrow, wide.astype(narrow.dtype))
    if compiled.algorithm == "xgboost":
        np.testing.assert_array_equal(compiled.score(narrow), compiled.score(wide))
        np.testing.assert_array_equal(scorer.probabilities(prepared), compiled.score(wide))
    else:
        np.testing.assert_allclose(compiled.score(narrow), compiled.score(wide), rtol=0, atol=1e-12)
        np.testing.assert_allclose(scorer.probabilities(prepared), compiled.score(wide), rtol=0, atol=1e-12)


def test_a_scorer_refills_its_matrix_batch_after_batch_and_travels_pickled(pipeline):
    """Each thread refills one matrix for batch after batch (no stale value, no score aliasing it), and
    the scorer still pickles for Spark's executors."""
    scorer = _scorer(pipeline)
    a, b, c = _table(synthetic_records(SPECS, 3 * 4096, seed=9)).to_batches(max_chunksize=4096)
    first = [scorer.probabilities(scorer.prepare(x)) for x in (a, b, c)]
    np.testing.assert_array_equal(scorer.probabilities(scorer.prepare(a)), first[0])
    assert not np.array_equal(first[0], first[1])
    np.testing.assert_array_equal(_scorer(pipeline).probabilities(scorer.prepare(c)), first[2])
    travelled = cloudpickle.loads(cloudpickle.dumps(scorer))
    np.testing.assert_array_equal(travelled.probabilities(travelled.prepare(b)), first[1])


def test_the_load_check_compares_the_batch_path_with_the_pipeline(pipeline):
    assert check_against_pipeline(pipeline, compile_pipeline(pipeline, SPECS), SPECS) <= 1e-6


def _csv_batch(text: str) -> pa.RecordBatch:
    names = text.splitlines()[0].split(",")
    options = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True)
    return pacsv.read_csv(io.BytesIO(text.encode()), convert_options=options).to_batches()[0]


def _valid_row() -> dict[str, str]:
    row = {"customer_id": "ok"}
    for s in SPECS:
        row[s.name] = s.categories[0] if s.type == CATEGORICAL else ("1" if s.type == "binary" else "5")
    return row


def test_every_bad_value_rejects_its_row_with_a_reason_naming_the_field():
    bad = {
        "tenure": ("-1", "tenure: below the minimum 0"),
        "monthly_charges": ("abc", "monthly_charges: not a number"),
        "female": ("2", "female: must be 0 or 1"),
        "contract": ("", "contract: missing value"),
        "total_charges": ("1e400", "total_charges: not a finite number"),
        "payment_method": ("x" * 200, "payment_method: longer than"),
    }
    rows = [_valid_row()]
    for name, (value, _) in bad.items():
        row = _valid_row()
        row["customer_id"], row[name] = name, value
        rows.append(row)
    both = _valid_row()
    both["customer_id"], both["tenure"], both["partner"] = "both", "500", "0.5"
    rows.append(both)
    unseen = _valid_row()
    unseen["customer_id"], unseen["contract"], unseen["total_charges"] = "unseen", "Ten year", " "
    rows.append(unseen)  # an unseen category is scored; total_charges is nullable: blank = missing
    names = list(rows[0])
    text = "\n".join([",".join(names), *[",".join(r[n] for n in names) for r in rows]])
    scorer = _scorer(_pipeline("logreg"))
    scored, rejected, prepared = scorer.score(_csv_batch(text), first_row=100)
    assert scored["customer_id"].to_pylist() == ["ok", "unseen"]
    assert prepared.unseen == {"contract": 1}
    reasons = dict(zip(rejected["customer_id"].to_pylist(), rejected["reason"].to_pylist(), strict=True))
    for name, (_, reason) in bad.items():
        assert reasons[name].startswith(reason), (name, reasons[name])
    assert (
        reasons["both"] == "partner: must be 0 or 1; tenure: above the maximum 120"
    )  # every field, schema order
    assert rejected["row"].to_pylist() == list(range(101, 101 + len(bad) + 1))
    assert rejected["tenure"].to_pylist()[-1] == "500"  # the input's values, as text


def test_a_wrong_column_set_is_one_error_naming_every_problem():
    fields = [pa.field("customer_id", pa.string())] + [
        pa.field(s.name, pa.string() if s.type == CATEGORICAL else pa.float64()) for s in SPECS
    ]
    check_columns(pa.schema([*fields, pa.field("extra", pa.string())]), SPECS, KEYS)  # extras are ignored
    broken = [f for f in fields if f.name not in ("tenure", "contract")]
    broken = [pa.field(f.name, pa.timestamp("s")) if f.name == "monthly_charges" else f for f in broken]
    with pytest.raises(ColumnError) as err:
        check_columns(pa.schema(broken), SPECS, ("customer_id", "account"))
    message = str(err.value)
    assert "\n" not in message
    for part in (
        "key column(s) missing: account",
        "tenure",
        "contract",
        "column monthly_charges is timestamp",
    ):
        assert part in message


def test_integer_categories_and_boolean_flags_are_read_like_the_loader():
    records = synthetic_records(SPECS, 50, seed=2)
    table = _table(records)
    scorer = _scorer(_pipeline("logreg"))
    expected = scorer.score(table.to_batches()[0])[0]["probability"].to_numpy()
    flags = [s.name for s in SPECS if s.type == "binary"]
    for name in flags:
        i = table.schema.get_field_index(name)
        values = table[name].to_numpy(zero_copy_only=False)
        column = pa.array([None if math.isnan(v) else bool(v) for v in values], pa.bool_())
        table = table.set_column(i, name, column)
    got = scorer.score(table.to_batches()[0])[0]["probability"].to_numpy()
    np.testing.assert_array_equal(got, expected)


def test_the_monitor_sample_keeps_a_fixed_size_over_batches():
    scorer = _scorer(_pipeline("logreg"))
    table = _table(synthetic_records(SPECS, 900, seed=4))
    sample = MonitorSample(40, seed=1)
    first = 0
    for batch in table.to_batches(max_chunksize=300):
        _, _, prepared = scorer.score(batch, first)
        sample.offer(scorer, batch, prepared, first)
        first += batch.num_rows
    rows = [r for r, *_ in sample.rows]
    assert len(rows) == 40 == len(set(rows))
    assert min(rows) < 300 and max(rows) >= 600  # drawn from every batch
    record = sample.rows[0][1]
    assert set(record) == {s.name for s in SPECS}
    assert all(
        isinstance(record[s.name], int) for s in SPECS if s.type == "binary" and record[s.name] is not None
    )


def test_progress_names_rows_share_and_rate():
    out = io.StringIO()
    progress = Progress(total=1000, every=0.0, stream=out)
    progress.tick(250, 3, force=True)
    line = out.getvalue().strip()
    assert line.startswith("score: 250 of 1,000 rows (25%)") and line.endswith("3 rejected")


def test_source_reads_csv_columns_as_text(tmp_path):
    path = tmp_path / "in.csv"
    records = synthetic_records(SPECS, 20, seed=5)
    pacsv.write_csv(_table(records), path)
    described = Described("telco-churn", "7", "champion", None, META, SPECS, 0.4)
    source: Source = open_source(path, KEYS, described)
    batch = next(source.batches(1000))
    assert batch.schema.field("tenure").type == pa.string()
    assert pa.types.is_dictionary(batch.schema.field("contract").type)
    with pytest.raises(ColumnError):
        open_source(path, ("nope",), described)
