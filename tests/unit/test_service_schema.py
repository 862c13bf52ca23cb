"""Schema derivation from a feature schema, and the request-path validator against the marshmallow reference."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from core.dataset import load_config
from core.feature_schema import FieldSpec, SchemaError, field_specs
from core.settings import REPO_ROOT
from model_service.request_schema import (
    RecordErrors,
    RecordValidator,
    predict_request_schema,
    record_schema,
)
from tests.support.service_process import RECORD as VALID

FEATURES = [f.as_dict() for f in load_config(REPO_ROOT / "config" / "telco_churn.yaml").features]


@pytest.fixture(scope="module")
def validator() -> RecordValidator:
    return RecordValidator(field_specs(FEATURES))


def test_specs_follow_the_feature_schema():
    specs = {s.name: s for s in field_specs(FEATURES)}
    assert list(specs) == list(VALID)
    assert specs["tenure"] == FieldSpec("tenure", "numeric", False, 0.0, 120.0)
    assert specs["total_charges"].nullable and not specs["total_charges"].required
    assert specs["contract"].categories == ("Month-to-month", "One year", "Two year")


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        [{"type": "numeric"}],
        [{"name": "x", "type": "date"}],
        [{"name": "x", "type": "binary"}, {"name": "x", "type": "binary"}],
    ],
)
def test_malformed_feature_schema_is_refused(bad):
    with pytest.raises(SchemaError):
        field_specs(bad)


def test_openapi_properties_are_derived(validator):
    from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter

    converter = OpenAPIConverter("3.0.3", lambda s: None, MarshmallowPlugin())
    js = converter.schema2jsonschema(record_schema(validator.specs)())
    props = js["properties"]
    assert props["tenure"]["type"] == "number" and (
        props["tenure"]["minimum"],
        props["tenure"]["maximum"],
    ) == (0, 120)
    assert props["female"]["enum"] == [0, 1]
    assert props["contract"]["type"] == "string" and "Two year" in props["contract"]["description"]
    assert props["total_charges"]["nullable"] is True
    assert set(js["required"]) == set(VALID) - {"total_charges"}
    assert js["additionalProperties"] is False
    request = converter.schema2jsonschema(predict_request_schema(validator.specs, 7)())
    assert (
        request["properties"]["records"]["maxItems"] == 7
        and request["properties"]["records"]["minItems"] == 1
    )


def test_valid_batch_is_columnar_and_normalised(validator):
    rec = {**VALID, "female": 1.0}
    rec.pop("total_charges")
    batch = validator.validate([VALID, rec, {**VALID, "contract": "Weekly"}])
    assert batch.n == 3
    assert batch.numeric["tenure"].tolist() == [1.0, 1.0, 1.0]
    assert math.isnan(batch.numeric["total_charges"][1])
    assert batch.records[1]["total_charges"] is None and batch.records[1]["female"] == 1
    assert type(batch.records[1]["female"]) is int
    assert batch.unknown == {"contract": [2]}  # unknown categories are accepted and reported


def test_categorical_strings_are_capped_from_the_schema(validator):
    spec = next(s for s in validator.specs if s.name == "payment_method")
    assert spec.max_length == max(64, max(len(c) for c in spec.categories) + 32)
    long_one = FieldSpec("f", "categorical", categories=("a" * 50,))
    assert long_one.max_length == 82
    with pytest.raises(RecordErrors) as err:
        validator.validate([VALID, {**VALID, "payment_method": "p" * 65}])
    assert err.value.messages == {1: {"payment_method": ["Longer than maximum length 64."]}}


def test_errors_name_record_index_and_field(validator):
    with pytest.raises(RecordErrors) as err:
        validator.validate([VALID, {**VALID, "tenure": "3"}, {**VALID, "female": 2, "colour": "red"}, "x"])
    msgs = err.value.messages
    assert set(msgs) == {1, 2, 3}
    assert msgs[1] == {"tenure": ["Not a number."]}
    assert msgs[2] == {"female": ["Must be 0 or 1."], "colour": ["Unknown field."]}
    assert "_schema" in msgs[3]


def _mutations(rng: random.Random, specs: list[FieldSpec]):
    bad_values = [
        None,
        "x",
        "",
        True,
        False,
        [],
        {},
        2,
        -1,
        0.5,
        1.0,
        0,
        1,
        1e9,
        -1e9,
        math.nan,
        math.inf,
        -math.inf,
        10**400,
        121,
        120,
        0.0,
        50,
        "Yes",
        "No",
        "Two year",
        "x" * 64,
        "x" * 65,
        "z" * 1000,
    ]
    yield dict(VALID)
    for spec in specs:
        for v in bad_values:
            yield {**VALID, spec.name: v}
        missing = dict(VALID)
        missing.pop(spec.name)
        yield missing
    for _ in range(200):
        rec = dict(VALID)
        for spec in rng.sample(specs, 3):
            rec[spec.name] = rng.choice(bad_values)
        if rng.random() < 0.1:
            rec["unknown_field"] = 1
        yield rec


def test_validator_agrees_with_the_marshmallow_schema(validator):
    """Same accept/reject verdict and the same fields named, on ~700 valid and invalid records."""
    rng = random.Random(0)
    checked = 0
    for rec in _mutations(rng, validator.specs):
        reference = validator.reference_errors(rec)
        try:
            validator.validate([rec])
            ours: dict = {}
        except RecordErrors as exc:
            ours = exc.messages[0]
        assert set(ours) == set(reference), (rec, ours, reference)
        checked += 1
    assert checked > 600


def test_complete_and_general_paths_give_the_same_batch(validator):
    rng = random.Random(1)
    records = []
    for _ in range(300):
        rec = dict(VALID)
        rec["tenure"] = rng.choice([0, 1, 70.5, 120])
        rec["female"] = rng.choice([0, 1, 1.0, 0.0])
        rec["contract"] = rng.choice(["Two year", "One year", "Weekly", ""])
        records.append(rec)
    fast = validator._validate_complete([dict(r) for r in records])
    general = validator._validate_general([dict(r) for r in records])
    assert fast is not None and fast.matrix is not None
    assert fast.records == general.records and fast.unknown == general.unknown
    assert fast.categorical == general.categorical
    for name in general.numeric:
        assert fast.numeric[name].tolist() == general.numeric[name].tolist()
    nullable = validator._validate_complete([{**VALID, "total_charges": None}])
    assert math.isnan(nullable.numeric["total_charges"][0]) and nullable.records[0]["total_charges"] is None
    # anything unusual takes the general path
    assert validator._validate_complete([{**VALID, "tenure": None}]) is None
    assert validator._validate_complete([{**VALID, "total_charges": math.nan}]) is None
    assert validator._validate_complete([{**VALID, "tenure": 200}]) is None


def test_one_record_is_checked_as_in_a_batch(validator):
    """A one-record batch is range-, finiteness- and 0/1-checked in plain Python: the same verdict and
    the same batch as the numpy checks of a larger batch, on every mutation of the record."""
    for rec in _mutations(random.Random(2), validator.specs):
        one = validator._validate_complete([dict(rec)])
        two = validator._validate_complete([dict(rec), dict(rec)])
        assert (one is None) == (two is None), rec
        if one is not None:
            assert one.records == two.records[:1] and one.unknown == {k: [0] for k in two.unknown}
            np.testing.assert_array_equal(one.matrix, two.matrix[:1])
