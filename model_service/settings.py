"""Settings of the model service, read from environment variables (documented defaults).

This is the one place where the service reads its environment; `gunicorn_conf.py` reads it too.
Switching from the embedded default to the on-prem stack is only a change of these variables.

| variable                  | default                                   | meaning                                        |
|---------------------------|-------------------------------------------|------------------------------------------------|
| MODEL_NAME                | telco-churn                               | registered model to serve                      |
| MODEL_ALIAS               | champion                                  | registry alias followed by the hot reload      |
| MLFLOW_TRACKING_URI       | sqlite:///<repo>/var/mlflow/mlflow.db     | MLflow registry (same default as training)     |
| DATABASE_URL              | sqlite:///<repo>/var/service/service.db   | prediction log (`postgresql+psycopg2://...`)   |
| HOST                      | 127.0.0.1                                 | bind address of gunicorn                       |
| PORT                      | 8000                                      | port of gunicorn                               |
| GUNICORN_WORKERS          | 2                                         | worker processes                               |
| GUNICORN_THREADS          | 4                                         | threads per worker (gthread)                   |
| GUNICORN_TIMEOUT          | 60                                        | silent worker limit (also covers model loading at boot) |
| GRACEFUL_TIMEOUT          | 30                                        | seconds a worker has to finish and flush       |
| API_KEYS                  | (none)                                    | comma-separated keys for predict and feedback  |
| ADMIN_TOKEN               | (none: admin endpoints answer 403)        | bearer token for /v1/admin/*                   |
| AUTH_ENABLED              | true                                      | `false` turns every key check off (explicit)   |
| RELOAD_INTERVAL_SECONDS   | 10                                        | how often each worker checks the alias         |
| MAX_BATCH_SIZE            | 1000                                      | records per /v1/predict request (413 above)    |
| MAX_REQUEST_BYTES         | 4194304                                   | request body limit (413 above)                 |
| LOG_QUEUE_SIZE            | 100000                                    | records held in memory before spooling         |
| LOG_BATCH_SIZE            | 500                                       | records per database insert                    |
| LOG_FLUSH_SECONDS         | 0.25                                      | longest wait before a partial batch is written |
| SPOOL_DIR                 | <repo>/var/service/spool                  | records go here while the database is down     |
| PROMETHEUS_MULTIPROC_DIR  | a fresh temporary folder per gunicorn     | gunicorn multiprocess metrics (emptied at start)|
| FAST_PATH                 | true                                      | numpy fast path (falls back to the pipeline)   |
| LOG_LEVEL                 | INFO                                      | service log level                              |

With AUTH_ENABLED=true (the default) and no API_KEYS the service refuses to start: there is no
default secret in the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from training.settings import REPO_ROOT, _default_tracking_uri


class SettingsError(ValueError):
    """The service's environment is inconsistent; the message is one line meant for the operator."""


def _path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO_ROOT / path


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")


def _number(name: str, default: str, kind: type = int, minimum: float | None = None):
    raw = os.environ.get(name) or default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def default_database_url() -> str:
    return f"sqlite:///{_path('var/service/service.db')}"


@dataclass(frozen=True)
class ServiceSettings:
    model_name: str
    model_alias: str
    tracking_uri: str
    database_url: str
    host: str
    port: int
    workers: int
    threads: int
    timeout: int
    graceful_timeout: int
    api_keys: tuple[str, ...]
    admin_token: str | None
    auth_enabled: bool
    reload_interval: float
    max_batch_size: int
    max_request_bytes: int
    log_queue_size: int
    log_batch_size: int
    log_flush_seconds: float
    spool_dir: Path
    prometheus_multiproc_dir: str | None
    fast_path: bool
    log_level: str

    @classmethod
    def from_env(cls) -> ServiceSettings:
        env = os.environ.get
        keys = tuple(k.strip() for k in (env("API_KEYS") or "").split(",") if k.strip())
        return cls(
            model_name=env("MODEL_NAME") or "telco-churn",
            model_alias=env("MODEL_ALIAS") or "champion",
            tracking_uri=env("MLFLOW_TRACKING_URI") or _default_tracking_uri(),
            database_url=env("DATABASE_URL") or default_database_url(),
            host=env("HOST") or "127.0.0.1",
            port=_number("PORT", "8000", int, 1),
            workers=_number("GUNICORN_WORKERS", "2", int, 1),
            threads=_number("GUNICORN_THREADS", "4", int, 1),
            timeout=_number("GUNICORN_TIMEOUT", "60", int, 1),
            graceful_timeout=_number("GRACEFUL_TIMEOUT", "30", int, 1),
            api_keys=keys,
            admin_token=(env("ADMIN_TOKEN") or "").strip() or None,
            auth_enabled=_bool("AUTH_ENABLED", True),
            reload_interval=_number("RELOAD_INTERVAL_SECONDS", "10", float, 0.1),
            max_batch_size=_number("MAX_BATCH_SIZE", "1000", int, 1),
            max_request_bytes=_number("MAX_REQUEST_BYTES", str(4 * 1024 * 1024), int, 1024),
            log_queue_size=_number("LOG_QUEUE_SIZE", "100000", int, 1),
            log_batch_size=_number("LOG_BATCH_SIZE", "500", int, 1),
            log_flush_seconds=_number("LOG_FLUSH_SECONDS", "0.25", float, 0.01),
            spool_dir=_path(env("SPOOL_DIR") or "var/service/spool"),
            prometheus_multiproc_dir=env("PROMETHEUS_MULTIPROC_DIR") or None,
            fast_path=_bool("FAST_PATH", True),
            log_level=(env("LOG_LEVEL") or "INFO").upper(),
        )

    def check(self) -> ServiceSettings:
        """Refuse configurations that must not start; returns self for chaining."""
        if self.auth_enabled and not self.api_keys:
            raise SettingsError(
                "API_KEYS is empty while AUTH_ENABLED=true: set API_KEYS=key1,key2 "
                "(or AUTH_ENABLED=false to run without authentication)"
            )
        if self.auth_enabled and any(len(k) < 16 for k in self.api_keys):
            raise SettingsError("every key in API_KEYS must be at least 16 characters long")
        if self.auth_enabled and self.admin_token is not None and len(self.admin_token) < 16:
            raise SettingsError("ADMIN_TOKEN must be at least 16 characters long")
        return self
