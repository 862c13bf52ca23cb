"""Settings of the model service (docs/settings.md is generated from this class).

With AUTH_ENABLED=true (the default) and no API_KEYS the service refuses to start (`check`): there is
no default secret in the repository. It also refuses an MLFLOW_TRACKING_URI naming a SQLite file that
does not exist (MLflow would silently create a new, empty store there); training, which creates the
store on the first run, does not make this check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from pydantic import field_validator

from core.settings import CommaList, RepoPath, Settings, SettingsError, env_field

__all__ = ["ServiceSettings", "SettingsError"]


class ServiceSettings(Settings):
    """The model service (the HTTP server, the app, the prediction log)."""

    state_paths: ClassVar[dict[str, str]] = {"spool_dir": "service/spool"}

    model_alias: str = env_field(
        "MODEL_ALIAS", "champion", "registry alias followed by the hot reload", min_length=1
    )
    host: str = env_field("HOST", "127.0.0.1", "bind address of the HTTP server (granian)")
    port: int = env_field("PORT", 8000, "port of the HTTP server", ge=1, le=65535)
    workers: int = env_field("SERVICE_WORKERS", 2, "worker processes (one per core)", ge=1)
    threads: int = env_field(
        "SERVICE_THREADS",
        16,
        "blocking threads per worker that run the app (granian reads request heads in Rust, so a client slow "
        "to send its headers holds none; a body is read by one of these threads, BODY_READERS)",
        ge=1,
    )
    graceful_timeout: int = env_field(
        "GRACEFUL_TIMEOUT", 30, "seconds a worker has to finish and flush", ge=1
    )
    access_log: bool = env_field(
        "ACCESS_LOG", False, "log every request to stdout (off by default: throughput)"
    )
    api_keys: CommaList = env_field(
        "API_KEYS", (), "comma-separated keys for predict, explain and feedback (each >= 16 characters)"
    )
    admin_token: str | None = env_field(
        "ADMIN_TOKEN", None, "bearer token for /v1/admin/* (none: they answer 403)"
    )
    auth_enabled: bool = env_field("AUTH_ENABLED", True, "`false` turns every key check off (explicit)")
    reload_interval: float = env_field(
        "RELOAD_INTERVAL_SECONDS", 10.0, "how often each worker checks the alias", ge=0.1
    )
    max_batch_size: int = env_field(
        "MAX_BATCH_SIZE", 1000, "records per /v1/predict request (413 above)", ge=1
    )
    max_request_bytes: int = env_field(
        "MAX_REQUEST_BYTES", 4 * 1024 * 1024, "request body limit in bytes (413 above)", ge=1024
    )
    body_readers: int | None = env_field(
        "BODY_READERS",
        None,
        "app threads per worker that may read request bodies at once (default: half of SERVICE_THREADS, at "
        "least 1; below SERVICE_THREADS, so that the others stay free for /health and requests whose body "
        "has come); a request that finds them all busy waits up to 1 s, then 503. A client that stops sending its body holds its thread until it "
        "sends or leaves: granian cannot time out a body read",
        ge=1,
    )
    log_segment_seconds: float = env_field(
        "LOG_SEGMENT_SECONDS",
        0.5,
        "a worker hands its spool segment to the prediction log's writer process once it is this old (or 1 MiB "
        "large): records reach the database about this long after their 200",
        ge=0.05,
        le=60,
    )
    log_sync: str = env_field(
        "LOG_SYNC",
        "write",
        "before a 200: `write` (the spool line is in the kernel's page cache: survives a killed worker; a "
        "power loss or kernel crash can take the lines since the last background sync, LOG_SYNC_SECONDS) or "
        "`fsync` (also `fdatasync`ed: survives a power loss too; slower)",
        pattern="^(fsync|write)$",
    )
    log_sync_seconds: float = env_field(
        "LOG_SYNC_SECONDS",
        1.0,
        "with LOG_SYNC=write: how often each worker `fdatasync`s its spool in the background, i.e. the "
        "power-loss window (0: never, the kernel writes back in its own time)",
        ge=0,
    )
    log_min_free_bytes: int = env_field(
        "LOG_MIN_FREE_BYTES",
        1024 * 1024,
        "/ready answers 503 (`log: nearly_full`) while the spool's filesystem has less free space than this "
        "(0: no such check); it also answers 503 (`log: unwritable`) while spool writes fail",
        ge=0,
    )
    spool_max_bytes: int = env_field(
        "SPOOL_MAX_BYTES",
        512 * 1024 * 1024,
        "backpressure: while more bytes than this wait in the spool for the database (it is down or "
        "slower than the traffic), predictions answer 503 with Retry-After and /ready says `backlogged` "
        "(0: no bound)",
        ge=0,
    )
    spool_max_age_seconds: float = env_field(
        "SPOOL_MAX_AGE_SECONDS",
        0.0,
        "backpressure: while a spool segment has waited longer than this for the database, predictions "
        "answer 503 (0: no bound; e.g. 3600 to stop serving after an hour without a prediction log)",
        ge=0,
        allow_inf_nan=False,
    )
    spool_dir: RepoPath | None = env_field(
        "SPOOL_DIR",
        None,
        "write-ahead log: every accepted record is written here before its 200 (and synced first with "
        "LOG_SYNC=fsync); it waits here while the database is down",
    )
    prometheus_multiproc_dir: str | None = env_field(
        "PROMETHEUS_MULTIPROC_DIR",
        None,
        "multiprocess metrics of the workers (default: a fresh temporary folder)",
    )
    fast_path: bool = env_field("FAST_PATH", True, "numpy fast path (falls back to the pipeline)")
    shadow_share: float = env_field(
        "SHADOW_SHARE",
        0.0,
        "share of predict requests the shadow alias also scores, off the request path (0: off)",
        ge=0,
        le=1,
    )
    shadow_alias: str = env_field("SHADOW_ALIAS", "challenger", "the version scored in shadow (not served)")

    @field_validator("admin_token")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @property
    def body_reader_threads(self) -> int:
        """BODY_READERS, or its default: half of SERVICE_THREADS (at least 1)."""
        return self.body_readers or max(1, self.threads // 2)

    def check(self) -> ServiceSettings:
        """Refuse configurations that must not start; returns self for chaining."""
        if self.body_readers is not None and self.body_readers >= self.threads:
            raise SettingsError(
                f"BODY_READERS ({self.body_readers}) must be below SERVICE_THREADS ({self.threads}): "
                "clients that stop sending their bodies would hold every thread and starve /health"
            )
        if self.auth_enabled and not self.api_keys:
            raise SettingsError(
                "API_KEYS is empty while AUTH_ENABLED=true: set API_KEYS=key1,key2 "
                "(or AUTH_ENABLED=false to run without authentication)"
            )
        if self.auth_enabled and any(len(k) < 16 for k in self.api_keys):
            raise SettingsError("every key in API_KEYS must be at least 16 characters long")
        if self.auth_enabled and self.admin_token is not None and len(self.admin_token) < 16:
            raise SettingsError("ADMIN_TOKEN must be at least 16 characters long")
        removed = [f"{old} ({why})" for old, why in REMOVED.items() if old in os.environ]
        if removed:
            raise SettingsError(
                "the prediction log's database writer is a process of its own since 2026-12 (no queue in the "
                "workers) and these settings are gone: " + ", ".join(removed) + "; remove them"
            )
        renamed = [f"{old} (now {new})" for old, new in RENAMED.items() if old in os.environ]
        if renamed:
            raise SettingsError(
                "the service runs under granian since 2026-12 and these gunicorn settings are gone: "
                + ", ".join(renamed)
                + "; rename or remove them"
            )
        registry_file = sqlite_file(self.tracking_uri or "")
        if registry_file is not None and not registry_file.is_file():
            # MLflow would create an empty store there: a mistyped path must not look like "no model yet"
            raise SettingsError(
                f"MLFLOW_TRACKING_URI names a SQLite file that does not exist ({registry_file}): the service "
                "serves an existing registry (run `make train` first, or fix the path)"
            )
        return self


# settings of the gunicorn era: refused by name, so that an old .env does not silently lose its values
RENAMED = {
    "GUNICORN_WORKERS": "SERVICE_WORKERS",
    "GUNICORN_THREADS": "SERVICE_THREADS",
    "GUNICORN_ACCESS_LOG": "ACCESS_LOG=true",
    "GUNICORN_TIMEOUT": "no equivalent: granian has no silent-worker timeout",
}

# settings of the in-worker database writer (until 2026-12): refused by name, so that nobody tunes a knob
# that no longer does anything
REMOVED = {
    "LOG_QUEUE_SIZE": "no queue: records wait in the spool",
    "LOG_BATCH_SIZE": "the writer inserts a whole segment per transaction",
    "LOG_FLUSH_SECONDS": "see LOG_SEGMENT_SECONDS",
}


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL (None for other URLs and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None
