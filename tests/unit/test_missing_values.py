"""Missing values stay missing outside training too (issue 12), on tests/support/missing_data.py's generated data
set: the service's validator takes null where the config declares a missing share, the simulator sends
null (never "nan"), and the monitor does not count a missing category as an unseen one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.dataset import load_config
from core.fastpath import to_frame
from core.feature_schema import field_specs
from core.features import prepare
from model_service.request_schema import RecordErrors, RecordValidator
from monitoring.drift import compute_drift
from monitoring.settings import MonitorSettings
from operations.simulate import to_json_record
from tests.support.missing_data import generate, write_dataset


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(write_dataset(tmp_path_factory.mktemp("accounts")))


@pytest.fixture(scope="module")
def validator(config):
    return RecordValidator(field_specs([f.as_dict() for f in config.features]))


def test_null_is_accepted_where_the_config_declares_a_missing_share(config, validator):
    records = [
        {"age": 40, "balance": None, "plan": "plus", "region": None},
        {"age": 41, "plan": "basic"},  # a nullable feature may also be left out
        {"age": 42, "balance": 10.0, "plan": "premium", "region": "east"},
    ]
    batch = validator.validate(records)
    assert batch.categorical["region"][:2] == [None, None]
    assert math.isnan(batch.numeric["balance"][0]) and math.isnan(batch.numeric["balance"][1])
    assert batch.records[1] == {"age": 41, "plan": "basic", "balance": None, "region": None}
    assert batch.unknown == {}  # a missing category is not an unknown one
    frame = to_frame(batch, validator.specs)  # what the pipeline path gets: NaN, never "None"
    assert frame["region"].iloc[:2].isna().all() and frame["region"].iloc[2] == "east"


def test_null_is_refused_where_the_config_declares_none_and_the_error_names_the_field(validator):
    with pytest.raises(RecordErrors) as err:
        validator.validate([{"age": None, "balance": None, "plan": None, "region": None}])
    assert err.value.messages == {0: {"age": ["Field may not be null."], "plan": ["Field may not be null."]}}


def test_the_simulator_sends_null_for_a_missing_value_never_nan(config):
    features, _ = prepare(generate(300), config)
    sent = [to_json_record(row, config) for _, row in features.iterrows()]
    regions = {r["region"] for r in sent}
    assert None in regions and regions - {None} <= {"north", "south", "east", "west"}
    assert any(r["balance"] is None for r in sent)
    assert not any(v in ("nan", "None") for r in sent for v in r.values())


def test_the_monitor_counts_a_missing_category_as_missing_not_unseen(config):
    features, label = prepare(generate(1500), config)
    reference = features.iloc[:700].assign(score=np.linspace(0, 1, 700), label=label.iloc[:700].to_numpy())
    # the window as the monitor reads it from the prediction log: the logged JSON records (null = None)
    logged = pd.DataFrame([to_json_record(row, config) for _, row in features.iloc[700:1200].iterrows()])
    current = logged.assign(score=np.linspace(0, 1, 500), label=np.nan)
    settings = MonitorSettings.from_env()
    result = compute_drift(
        reference, current, config, settings.drift, settings.quality, 0.5, summary_table=False
    )
    region = next(f for f in result.features if f.feature == "region")
    assert region.unseen_share == 0.0
    assert (
        0.05 < region.missing_share < 0.2
        and abs(region.missing_share - region.reference_missing_share) < 0.05
    )
    assert not any(k.startswith(("unseen:", "missing:")) for k in result.kinds)
