import numpy as np
import pandas as pd

from core.dataset import load_config
from core.features import build_preprocessor, coerce_features, example_record, original_feature
from core.settings import REPO_ROOT

CONFIG = load_config(REPO_ROOT / "config" / "telco_churn.yaml")


def _frame(n=50, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for f in CONFIG.features:
        if f.type == "categorical":
            data[f.name] = rng.choice(list(f.categories), n)
        elif f.type == "binary":
            data[f.name] = rng.integers(0, 2, n)
        else:
            data[f.name] = rng.uniform(f.min, min(f.max, 500), n)
    return pd.DataFrame(data)


def test_coerce_makes_numbers_float_and_categories_strings():
    frame = _frame()
    frame["senior_citizen"] = frame["senior_citizen"].astype(bool)
    out = coerce_features(frame, CONFIG)
    assert list(out.columns) == CONFIG.feature_names
    assert out["senior_citizen"].dtype == "float64"
    assert out["contract"].map(type).eq(str).all()


def test_preprocessor_fills_configured_value_and_ignores_unseen_categories():
    frame = coerce_features(_frame(), CONFIG)
    pre = build_preprocessor(CONFIG, scale=False).fit(frame)
    names = list(pre.get_feature_names_out())
    probe = frame.head(2).copy()
    probe.loc[0, "total_charges"] = np.nan
    probe.loc[1, "contract"] = "Ten year"
    out = pre.transform(probe)
    assert out[0, names.index("fill_total_charges__total_charges")] == 0.0
    contract_cols = [i for i, n in enumerate(names) if original_feature(n, CONFIG) == "contract"]
    assert out[1, contract_cols].sum() <= 1.0  # unseen: no column or the infrequent one, never an error


def test_original_feature_maps_one_hot_columns_back():
    assert original_feature("categorical__payment_method_Mailed check", CONFIG) == "payment_method"
    assert original_feature("numeric__tenure", CONFIG) == "tenure"
    assert original_feature("categorical__streaming_tv_No internet service", CONFIG) == "streaming_tv"


MISSING_MARKERS = [None, np.nan, pd.NA, pd.NaT, float("nan")]


def test_every_missing_marker_of_a_category_is_nan_never_the_string_nan():
    frame = _frame(n=len(MISSING_MARKERS) + 1)
    frame["contract"] = pd.Series(["One year", *MISSING_MARKERS], dtype=object)
    frame["tenure"] = pd.Series([3, *MISSING_MARKERS], dtype=object)
    out = coerce_features(frame, CONFIG)
    assert out["contract"].iloc[0] == "One year"
    assert out["contract"].iloc[1:].map(lambda v: isinstance(v, float) and np.isnan(v)).all()
    assert not out["contract"].isin(["nan", "None", "<NA>", "NaT"]).any()
    assert out["tenure"].dtype == "float64" and out["tenure"].iloc[1:].isna().all()


def test_a_numeric_coded_category_read_with_missing_values_keeps_its_declared_name():
    # a CSV column of codes 1, 2 with a gap is read as float64 (1.0, NaN, 2.0): the category is "1"
    frame = _frame(n=3)
    frame["contract"] = [1.0, np.nan, 2.0]
    assert coerce_features(frame, CONFIG)["contract"].iloc[[0, 2]].tolist() == ["1", "2"]


def test_the_model_encodes_every_missing_category_marker_as_the_missing_category():
    frame = coerce_features(_frame(n=200), CONFIG)
    frame.loc[:9, "contract"] = np.nan
    pre = build_preprocessor(CONFIG, scale=False).fit(frame)
    names = list(pre.get_feature_names_out())
    missing_col = names.index("categorical__contract___missing__")
    contract_cols = [i for i, n in enumerate(names) if original_feature(n, CONFIG) == "contract"]
    for marker in MISSING_MARKERS:  # also when the pipeline is called without coerce_features
        probe = frame.head(1).astype({"contract": object})
        probe["contract"] = pd.Series([marker], dtype=object)
        row = pre.transform(probe)[0]
        assert row[missing_col] == 1.0 and row[contract_cols].sum() == 1.0, repr(marker)


def test_the_example_record_is_the_configs_else_a_reference_record_with_null_for_missing():
    from dataclasses import replace

    assert example_record(CONFIG) == {**CONFIG.example_record, "monthly_charges": 95.0, "tenure": 1.0}
    without = replace(CONFIG, example_record={})
    reference = coerce_features(_frame(n=3), CONFIG)
    reference.loc[0, ["contract", "total_charges"]] = np.nan
    record = example_record(without, reference)
    assert record["contract"] is None and record["total_charges"] is None
    assert isinstance(record["female"], int) and isinstance(record["payment_method"], str)
    assert example_record(without) == {}
