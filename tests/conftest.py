"""Shared fixtures.

`embedded_env` points every component at a fresh embedded default (SQLite + local folders) under a
temporary directory; `trained_champion` trains a small model there once per session and promotes it.
Servers: `require_server(reason)` skips loudly on a developer machine and fails under CI (CI=true),
where every server must be available.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAST_TRAINING = {"OPTUNA_TRIALS": "2", "CV_FOLDS": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def require_server(reason: str) -> None:
    """A test that cannot get its server: fail in CI, skip loudly elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must have this server: {reason}")
    warnings.warn(f"SKIPPED, server not available: {reason}", stacklevel=2)
    pytest.skip(f"server not available: {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embedded_env_vars(root: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(root / "data"),
        "REPORTS_DIR": str(root / "reports"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "DATABASE_URL": f"sqlite:///{root / 'service.db'}",
        **FAST_TRAINING,
    }


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in embedded_env_vars(tmp_path).items():
        monkeypatch.setenv(key, value)
    return tmp_path


@dataclass(frozen=True)
class TrainedStore:
    root: Path
    env: dict[str, str]
    model_name: str
    version: str


@pytest.fixture(scope="session")
def trained_champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedStore]:
    """A real model trained on the real data set (few tuning trials), registered and promoted."""
    from training import gate, registry, train
    from training.settings import TrainingSettings

    root = tmp_path_factory.mktemp("store")
    env = embedded_env_vars(root)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = TrainingSettings.from_env()
        result = train.train(settings)
        assert gate.main([]) == 0, "the first model must pass the gate on its floors"
        assert registry.version_by_alias(settings.model_name, registry.CHAMPION).version == result.version
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield TrainedStore(root, env, settings.model_name, result.version)


@pytest.fixture
def champion_env(trained_champion: TrainedStore, monkeypatch: pytest.MonkeyPatch) -> TrainedStore:
    """The trained store's settings applied to this test's environment (and MLflow's client)."""
    import mlflow

    for key, value in trained_champion.env.items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    return trained_champion
