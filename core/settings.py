"""The one settings mechanism: typed classes on one base, read from environment variables.

Every component's settings class (`TrainingSettings`, `ServiceSettings`, `MonitorSettings`) derives
from `Settings` here, so they share the variables every part of the loop needs (`STATE_DIR`,
`MODEL_NAME`, `MLFLOW_TRACKING_URI`, `DATABASE_URL`, `DATASET_CONFIG`, `LOG_LEVEL`, `LOG_FORMAT`), their defaults
and their error handling:

- an empty variable counts as unset (Compose writes `VAR=` for `${VAR:-}`): the default applies;
- every bad variable is reported at once, in one line (`SettingsError`); the command-line entry
  points print it as `error: ...` and exit with code 2 (`load_or_exit`);
- every local path derives from `STATE_DIR` (default `var` in the repository) and each stays
  overridable by its own variable; relative paths are taken from the repository root.

docs/settings.md is generated from these classes (`make settings-doc`); a test keeps it current.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.dataset import default_model_name

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """The environment is inconsistent; the message is one line meant for the operator."""


def repo_path(value: str | Path) -> Path:
    """A path as given, relative ones taken from the repository root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


RepoPath = Annotated[Path, AfterValidator(repo_path)]


def split_commas(value: object) -> object:
    """`a, b,,c` -> ("a", "b", "c"); anything else as given."""
    if isinstance(value, str):
        return tuple(k.strip() for k in value.split(",") if k.strip())
    return value


# a comma-separated variable read as a tuple of its non-empty, stripped items (not as JSON)
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_commas)]


def env_field(
    variable: str | tuple[str, ...], default: Any = None, description: str = "", **kwargs: Any
) -> Any:
    """A settings field read from `variable` (or the first set of several), documented by `description`."""
    alias = variable if isinstance(variable, str) else AliasChoices(*variable)
    return Field(default, validation_alias=alias, description=description, **kwargs)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Settings(BaseSettings):
    """Shared by every component: where state lives, which model, which stores."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        extra="ignore",
        protected_namespaces=(),
        populate_by_name=True,
        case_sensitive=True,
    )
    # Shown in the settings reference instead of a computed default (a path under STATE_DIR).
    derived_defaults: ClassVar[dict[str, str]] = {
        "tracking_uri": "sqlite:///$STATE_DIR/mlflow/mlflow.db",
        "database_url": "sqlite:///$STATE_DIR/service/service.db",
        "model_name": "from DATASET_CONFIG: telco-churn",
        "log_archive_uri": "$STATE_DIR/archive/prediction-log",
    }

    state_dir: RepoPath = env_field(
        "STATE_DIR", Path("var"), "folder under which every local path of the embedded default lives"
    )
    dataset_config: RepoPath = env_field(
        "DATASET_CONFIG", Path("config/telco_churn.yaml"), "the data set's config file"
    )
    model_name: str | None = env_field(
        "MODEL_NAME",
        None,
        "registered model name; unset: the data set config's `model_name:`, else its `name` with `_` as "
        "`-` (`telco-churn` for the built-in config)",
        min_length=1,
    )
    tracking_uri: str | None = env_field(
        "MLFLOW_TRACKING_URI", None, "MLflow tracking and registry store (a server URL on the stack)"
    )
    database_url: str | None = env_field(
        "DATABASE_URL", None, "prediction log, feedback and monitoring history (PostgreSQL on the stack)"
    )
    log_level: str = env_field("LOG_LEVEL", "INFO", "log level of every component")
    log_format: Literal["text", "json"] = env_field(
        "LOG_FORMAT", "text", "text (a terminal) or json (one object per line, for a log collector)"
    )
    s3_endpoint: str = env_field(
        "S3_ENDPOINT_URL",
        "",
        "S3 endpoint for s3:// URIs (reports, the prediction-log archive): the stack's Ceph RGW, or any "
        "S3 API",
    )
    s3_access_key: str = env_field("AWS_ACCESS_KEY_ID", "", "S3 credentials")
    s3_secret_key: str = env_field("AWS_SECRET_ACCESS_KEY", "", "S3 credentials")
    log_retention_days: int = env_field(
        "LOG_RETENTION_DAYS",
        0,
        "prediction-log retention: UTC days entirely older than this many days are archived as Parquet "
        "to LOG_ARCHIVE_URI, then deleted from the database (0: off; the monitor loop runs it daily)",
        ge=0,
    )
    log_archive_uri: str | None = env_field(
        "LOG_ARCHIVE_URI",
        None,
        "the prediction-log archive: a folder or s3://bucket/prefix (day-partitioned Parquet)",
    )
    log_retention_batch: int = env_field(
        "LOG_RETENTION_BATCH_SIZE",
        2000,
        "retention deletes archived rows this many per transaction (short locks: the service keeps writing)",
        ge=1,
    )

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        value = value.upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("database_url")
    @classmethod
    def _psycopg2(cls, value: str | None) -> str | None:
        # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the project ships psycopg2
        if value and value.startswith("postgresql://"):
            return "postgresql+psycopg2://" + value.removeprefix("postgresql://")
        return value

    def model_post_init(self, _context: Any) -> None:
        if self.model_name is None:
            self.model_name = default_model_name(self.dataset_config)
        if self.tracking_uri is None:
            self.tracking_uri = sqlite_url(self.state_dir / "mlflow" / "mlflow.db")
        if self.database_url is None:
            self.database_url = sqlite_url(self.state_dir / "service" / "service.db")
        if self.log_archive_uri is None:
            self.log_archive_uri = str(self.state_dir / "archive" / "prediction-log")
        elif not self.log_archive_uri.startswith("s3://"):
            self.log_archive_uri = str(repo_path(self.log_archive_uri))
        for name in type(self).model_fields:
            if getattr(self, name) is None and name in self.state_paths:
                object.__setattr__(self, name, self.state_dir / self.state_paths[name])

    # field -> path under STATE_DIR, for the Path fields whose default is None
    state_paths: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_env(cls: type[S], **overrides: Any) -> S:
        """Read the environment; every bad variable in one `SettingsError`."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(describe(exc, cls)) from None


S = TypeVar("S", bound=Settings)


def variable_of(cls: type[Settings], field: str) -> str:
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        alias = alias.choices[0]
    return alias if isinstance(alias, str) else field.upper()


def describe(exc: ValidationError, cls: type[Settings]) -> str:
    """One line naming every bad variable, its value and what is wrong with it."""
    aliases = {variable_of(cls, name) for name in cls.model_fields}
    parts = []
    for error in exc.errors():
        loc = str(error["loc"][0]) if error["loc"] else ""
        variable = loc if loc in aliases else variable_of(cls, loc)
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        parts.append(f"{variable}{shown}: {message}")
    return "invalid settings: " + "; ".join(parts)


def load_or_exit(cls: type[S], **overrides: Any) -> S:
    """For command-line entry points: the settings, or `error: ...` on stderr and exit code 2."""
    try:
        return cls.from_env(**overrides)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def git_commit(explicit: str | None = None) -> str:
    """The code version tagged on runs: GIT_COMMIT (images set it), else `git rev-parse HEAD`."""
    if explicit:
        return explicit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def reference_markdown(classes: list[type[Settings]]) -> str:
    """docs/settings.md: one table per settings class, generated from the fields' declarations."""
    lines = [
        "# Settings reference",
        "",
        "<!-- generated by `make settings-doc` from the classes in core/settings.py and each package's",
        "settings.py; do not edit by hand (a test compares this file with the classes) -->",
        "",
        "Every component reads its settings from environment variables through one typed mechanism",
        "(`core.settings.Settings`, pydantic-settings). An empty variable counts as unset. Every bad",
        "variable is reported at once in one line; command-line entry points exit with code 2.",
        "Relative paths are taken from the repository root; every local path derives from `STATE_DIR`.",
        "",
    ]
    seen: set[str] = set()
    for cls in classes:
        rows = []
        for name, info in cls.model_fields.items():
            variable = variable_of(cls, name)
            if variable in seen:
                continue
            seen.add(variable)
            if name in cls.derived_defaults:
                default = cls.derived_defaults[name]
            elif name in cls.state_paths:
                default = f"$STATE_DIR/{cls.state_paths[name]}"
            elif info.default is None:
                default = "(none)"
            else:
                default = info.default
                if isinstance(default, Path):
                    default = default.as_posix()
            description = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{variable}` | `{default}` | {description} |")
        title = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        lines += [f"## {cls.__name__} (`{cls.__module__}`)", "", title, ""]
        if cls is not Settings:
            lines += ["Also reads every variable of `Settings` above.", ""]
        lines += ["| variable | default | meaning |", "| --- | --- | --- |", *rows, ""]
    return "\n".join(lines)
