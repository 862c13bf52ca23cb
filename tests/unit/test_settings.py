"""One settings mechanism: every component reads the same variables the same way, reports every bad
variable at once in one line, derives its local paths from STATE_DIR, and the reference is current."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.settings import REPO_ROOT, Settings, SettingsError, variable_of
from model_service.settings import ServiceSettings
from monitoring import monitor
from monitoring.settings import MonitorSettings
from scoring.settings import ScoreSettings
from tools import settings_reference
from training import gate, train
from training.settings import TrainingSettings

COMPONENTS = [TrainingSettings, ServiceSettings, MonitorSettings, ScoreSettings]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch):
    for cls in [Settings, *COMPONENTS]:
        for name in cls.model_fields:
            monkeypatch.delenv(variable_of(cls, name), raising=False)


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_an_empty_variable_means_its_default_in_every_component(cls, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MODEL_NAME", "")
    assert cls.from_env().model_name == "telco-churn"


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_every_bad_variable_is_named_in_one_line(cls, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")  # valid: rewritten to psycopg2
    with pytest.raises(SettingsError) as caught:
        cls.from_env()
    message = str(caught.value)
    assert "\n" not in message
    assert "LOG_LEVEL='chatty'" in message


def test_several_bad_variables_are_reported_together(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PORT", "eighty")
    monkeypatch.setenv("SERVICE_WORKERS", "0")
    monkeypatch.setenv("AUTH_ENABLED", "maybe")
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env()
    message = str(caught.value)
    for variable in ("PORT='eighty'", "SERVICE_WORKERS='0'", "AUTH_ENABLED='maybe'"):
        assert variable in message


def test_local_paths_derive_from_state_dir_and_each_stays_overridable(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("REPORTS_DIR", str(tmp_path / "elsewhere"))
    training, service, monitor, scoring = (cls.from_env() for cls in COMPONENTS)
    state = tmp_path / "state"
    assert training.data_dir == state / "data"
    assert training.artifact_root == state / "mlflow" / "artifacts"
    assert training.reports_dir == tmp_path / "elsewhere"
    assert training.tracking_uri == f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"
    assert service.database_url == monitor.database_url == f"sqlite:///{state / 'service' / 'service.db'}"
    assert service.spool_dir == state / "service" / "spool"
    assert monitor.retrain_log_dir == state / "logs" / "retrain"
    assert scoring.artifact_root == training.artifact_root
    assert scoring.database_url == service.database_url and scoring.tracking_uri == training.tracking_uri
    assert monitor.reports_uri == str(state / "reports" / "monitoring")


def test_relative_paths_are_taken_from_the_repository(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STATE_DIR", "var/other")
    assert TrainingSettings.from_env().data_dir == REPO_ROOT / "var" / "other" / "data"


def test_service_keys_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("API_KEYS", " k1-aaaaaaaaaaaaaaaa , k2-bbbbbbbbbbbbbbbb ,")
    assert ServiceSettings.from_env().api_keys == ("k1-aaaaaaaaaaaaaaaa", "k2-bbbbbbbbbbbbbbbb")
    monkeypatch.setenv("SCORE_KEYS", "customer_id, region,,")
    assert ScoreSettings.from_env().keys == ("customer_id", "region")
    monkeypatch.setenv("SCORE_KEYS", '["not", "json"]')  # read as commas, never as JSON
    assert ScoreSettings.from_env().keys == ('["not"', '"json"]')


@pytest.mark.parametrize(
    ("main", "argv", "variable", "value"),
    [
        (train.main, [], "OPTUNA_TRIALS", "many"),
        (gate.main, [], "LOG_LEVEL", "loud"),
        (monitor.main, ["run"], "RETRAIN_TRIGGER", "pager"),
    ],
    ids=["train", "gate", "monitor"],
)
def test_a_command_exits_2_with_one_line_naming_the_variable(
    main, argv, variable, value, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings:")
    assert f"{variable}={value!r}" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing was created before the settings were checked


def test_the_reference_in_the_docs_is_generated_from_the_classes():
    assert settings_reference.main(["--check"]) == 0, "run `make settings-doc`"
    text = (REPO_ROOT / "docs" / "settings.md").read_text()
    for cls in COMPONENTS:
        for name in cls.model_fields:
            assert f"`{variable_of(cls, name)}`" in text


PACKAGES = ["core", "training", "model_service", "monitoring", "scoring"]


def test_only_the_settings_classes_read_the_environment():
    """os.environ / os.getenv reads live in settings modules only (passing the environment on to a
    child process, or exporting a variable, is not a read of a setting)."""
    readers = []
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            if path.name == "settings.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    target = ast.unparse(node.func)
                    if target in ("os.environ.get", "os.getenv"):
                        readers.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
                subscript = isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ"
                if subscript and isinstance(node.ctx, ast.Load):
                    readers.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert readers == []


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_model_name_defaults_to_the_data_set_config(cls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from tests.support.missing_data import write_dataset

    assert cls.from_env().model_name == "telco-churn"  # the built-in config
    config = write_dataset(tmp_path, model_name="accounts-model")
    monkeypatch.setenv("DATASET_CONFIG", str(config))
    assert cls.from_env().model_name == "accounts-model"  # the config's model_name
    monkeypatch.setenv("MODEL_NAME", "mine")
    assert cls.from_env().model_name == "mine"  # the variable wins
    monkeypatch.delenv("MODEL_NAME")
    config.write_text(config.read_text().replace("model_name: accounts-model\n", ""))
    assert cls.from_env().model_name == "accounts"  # no model_name: the data set's name
    monkeypatch.setenv("DATASET_CONFIG", str(REPO_ROOT / "config" / "examples" / "oj_purchase.yaml"))
    assert cls.from_env().model_name == "oj-purchase"


@pytest.mark.parametrize(
    ("uri", "refused"),
    [
        ("sqlite:///{tmp}/missing/mlflow.db", True),
        ("sqlite:///{tmp}/mlflow.db", False),
        ("sqlite:///{tmp}/mlflow.db?mode=ro", False),
        ("http://127.0.0.1:5000", False),
        ("sqlite:///:memory:", False),
    ],
    ids=["missing-file", "existing-file", "existing-with-query", "server", "memory"],
)
def test_the_service_refuses_a_registry_file_that_does_not_exist(tmp_path: Path, uri, refused):
    """A mistyped MLFLOW_TRACKING_URI file must not become a new empty store (training may create one)."""
    (tmp_path / "mlflow.db").write_bytes(b"")
    settings = ServiceSettings.from_env(tracking_uri=uri.format(tmp=tmp_path), api_keys=("k" * 16,))
    if refused:
        with pytest.raises(SettingsError) as caught:
            settings.check()
        assert "MLFLOW_TRACKING_URI" in str(caught.value) and "\n" not in str(caught.value)
        assert not (tmp_path / "missing").exists()
    else:
        assert settings.check() is settings
    # training is not refused: its first run creates the store
    TrainingSettings.from_env(tracking_uri=uri.format(tmp=tmp_path))


@pytest.mark.parametrize(
    "old", ["GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_ACCESS_LOG", "GUNICORN_TIMEOUT"]
)
def test_the_service_refuses_the_settings_of_the_gunicorn_era_by_name(tmp_path: Path, monkeypatch, old):
    """An old .env must not silently lose its values (the settings ignore unknown variables)."""
    (tmp_path / "mlflow.db").write_bytes(b"")
    settings = ServiceSettings.from_env(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", api_keys=("k" * 16,))
    assert settings.check() is settings
    monkeypatch.setenv(old, "4")
    with pytest.raises(SettingsError) as caught:
        settings.check()
    message = str(caught.value)
    assert old in message and "\n" not in message
    assert ("SERVICE_" in message) == (old in ("GUNICORN_WORKERS", "GUNICORN_THREADS"))


def test_every_component_reads_the_same_retention_settings(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    for component in (cls.from_env() for cls in COMPONENTS):
        assert component.log_retention_days == 0  # off on the embedded default
        assert component.log_archive_uri == str(tmp_path / "state" / "archive" / "prediction-log")
    monkeypatch.setenv("LOG_RETENTION_DAYS", "30")
    monkeypatch.setenv("LOG_ARCHIVE_URI", "s3://archive/prediction-log")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://s3:9000")
    for component in (cls.from_env() for cls in COMPONENTS):
        assert (component.log_retention_days, component.log_archive_uri) == (
            30,
            "s3://archive/prediction-log",
        )
        assert component.s3_endpoint == "http://s3:9000"
    monkeypatch.setenv("LOG_ARCHIVE_URI", "var/elsewhere")
    assert TrainingSettings.from_env().log_archive_uri == str(REPO_ROOT / "var" / "elsewhere")
    monkeypatch.setenv("LOG_RETENTION_DAYS", "-1")
    with pytest.raises(SettingsError, match="LOG_RETENTION_DAYS='-1'"):
        MonitorSettings.from_env()
