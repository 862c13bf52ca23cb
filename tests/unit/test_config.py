from pathlib import Path

import pytest
import yaml

from core.dataset import ConfigError, load_config
from core.settings import REPO_ROOT

TELCO = REPO_ROOT / "config" / "telco_churn.yaml"


def test_telco_config_declares_the_19_features():
    config = load_config(TELCO)
    assert len(config.features) == 19
    assert config.target == "churn" and config.positive_class == "Yes"
    assert set(config.of_type("numeric")) == {"tenure", "monthly_charges", "total_charges"}
    assert config.fn_cost > config.fp_cost
    assert set(config.example_record) == set(config.feature_names)


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(TELCO.read_text())
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("target"), "missing required key 'target'"),
        (lambda r: r["features"]["tenure"].update(type="number"), "features.tenure.type 'number'"),
        (lambda r: r["features"]["contract"].pop("categories"), "features.contract is categorical"),
        (lambda r: r["features"]["tenure"].update(min=10, max=1), "features.tenure has min 10 > max 1"),
        (lambda r: r.update(segments=["nope"]), "segments lists 'nope'"),
        (lambda r: r["features"].update(churn={"type": "binary"}), "target 'churn' is also listed"),
        (lambda r: r["source"].update(kind="ftp"), "source.kind 'ftp'"),
        (lambda r: r["features"]["tenure"].update(maximum=3), "unknown key(s) ['maximum']"),
        (
            lambda r: r["example_record"].pop("tenure"),
            "example_record must name every feature (missing ['tenure']",
        ),
        (lambda r: r["example_record"].update(age=3), "unknown ['age']"),
        (lambda r: r.update(example_record=[1, 2]), "example_record must map every feature"),
        (
            lambda r: r["example_record"].update(tenure=None),
            "example_record.tenure is null, but features.tenure declares no max_missing_share",
        ),
        (lambda r: r.update(model_name="my model"), "model_name must be a non-empty name"),
        (lambda r: r["labels"].update(horizon_days=-1), "labels.horizon_days must be a number of days"),
        (lambda r: r["labels"].update(horizon_days="30d"), "labels.horizon_days must be a number of days"),
        (
            lambda r: r["labels"].update(never_share=1),
            "labels.never_share must be a number from 0 to below 1",
        ),
        (lambda r: r["labels"].update(late=True), "labels has unknown key(s) ['late']"),
    ],
)
def test_config_errors_name_the_key(tmp_path, mutate, message):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, mutate))
    assert message in str(err.value)


def test_the_label_horizon_is_read_and_defaults_to_labels_at_once(tmp_path):
    config = load_config(TELCO)
    assert (config.label_horizon_days, config.label_never_share) == (30.0, 0.2)
    assert load_config(_write(tmp_path, lambda r: r.pop("labels"))).label_horizon_days == 0


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")


def test_model_name_is_the_configs_or_derived_from_its_name(tmp_path):
    assert load_config(TELCO).model_name == "telco-churn"
    assert load_config(_write(tmp_path, lambda r: r.pop("model_name"))).model_name == "telco-churn"
    assert load_config(_write(tmp_path, lambda r: r.update(model_name="churn-v2"))).model_name == "churn-v2"
    # a nullable feature may be null in the example record
    assert load_config(_write(tmp_path, lambda r: r["example_record"].update(total_charges=None)))


def test_reports_call_a_positive_record_by_the_data_sets_words():
    from core.dataset import positive_word

    assert load_config(TELCO).positive_word == "churn"  # churn = "Yes"
    assert load_config(REPO_ROOT / "config" / "examples" / "oj_purchase.yaml").positive_word == "Purchase=MM"
    assert positive_word("closed", "yes") == "closed" and positive_word("default", 1) == "default"
