"""Settings of monitoring: the monitor, the retrain trigger, rollback (docs/settings.md is generated
from this class). Switching from the embedded default to the on-prem stack is only a change of URLs
(DATABASE_URL, MLFLOW_TRACKING_URI, MONITOR_REPORTS_URI, RETRAIN_TRIGGER=jenkins, JENKINS_*).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import field_validator

from core.settings import RepoPath, Settings, env_field, repo_path

TRIGGER_BACKENDS = ("local", "jenkins", "log")


@dataclass(frozen=True)
class DriftSettings:
    """The static thresholds (champions trained before calibration; core.drift.Calibration.static) and the
    data-quality bounds. The distances themselves are fixed: normed Wasserstein and Jensen-Shannon.
    Built by `MonitorSettings.drift`, whose fields hold the defaults."""

    num_method: str
    num_threshold: float
    cat_method: str
    cat_threshold: float
    share_threshold: float
    prediction_method: str
    prediction_threshold: float
    missing_share_delta: float
    unseen_category_share: float


@dataclass(frozen=True)
class QualitySettings:
    """Live-quality bounds, built by `MonitorSettings.quality` (floors of 0 left out)."""

    min_labelled: int
    floors: dict[str, float]


@dataclass(frozen=True)
class JenkinsSettings:
    """The Jenkins backend's connection, built by `MonitorSettings.jenkins`."""

    url: str
    user: str
    api_token: str
    job: str
    job_token: str


class MonitorSettings(Settings):
    """The monitor (drift, live quality), the retrain trigger and rollback."""

    state_paths: ClassVar[dict[str, str]] = {"retrain_log_dir": "logs/retrain", "data_dir": "data"}
    derived_defaults: ClassVar[dict[str, str]] = {
        **Settings.derived_defaults,
        "reports_uri": "$STATE_DIR/reports/monitoring",
        "retrain_command": "<python> -m training.retrain",
    }

    window_size: int = env_field(
        "MONITOR_WINDOW_SIZE", 500, "at most this many most recent predictions", ge=1
    )
    window_minutes: float = env_field(
        "MONITOR_WINDOW_MINUTES", 60.0, "... logged within this many minutes (0: any age)", ge=0
    )
    min_window: int = env_field("MONITOR_MIN_WINDOW", 200, "fewer records: the run is skipped", ge=1)
    drift_num_method: Literal["wasserstein"] = env_field(
        "DRIFT_NUM_METHOD",
        "wasserstein",
        "numeric features' distance (the calibrated bounds are for this one)",
    )
    drift_num_threshold: float = env_field(
        "DRIFT_NUM_THRESHOLD", 0.2, "uncalibrated champions only: drifted past this distance"
    )
    drift_cat_method: Literal["jensenshannon"] = env_field(
        "DRIFT_CAT_METHOD", "jensenshannon", "categorical and binary features' distance"
    )
    drift_cat_threshold: float = env_field(
        "DRIFT_CAT_THRESHOLD", 0.1, "uncalibrated champions only: drifted past this distance"
    )
    drift_share_threshold: float = env_field(
        "DRIFT_SHARE_THRESHOLD",
        0.1,
        "uncalibrated champions only: alarm when this share of features drifted",
        gt=0,
        le=1,
    )
    prediction_drift_method: Literal["wasserstein"] = env_field(
        "PREDICTION_DRIFT_METHOD", "wasserstein", "the score's distance"
    )
    prediction_drift_threshold: float = env_field(
        "PREDICTION_DRIFT_THRESHOLD", 0.2, "uncalibrated champions only: score drift past this distance"
    )
    missing_share_delta: float = env_field(
        "MISSING_SHARE_DELTA", 0.1, "alarm when a feature's missing share rises by more than this"
    )
    unseen_category_share: float = env_field(
        "UNSEEN_CATEGORY_SHARE", 0.05, "alarm when this share of a feature's values is unseen"
    )
    cohort_minutes: float = env_field(
        "MONITOR_COHORT_MINUTES",
        1440.0,
        "one cohort per this many minutes of scoring (the newest judged window of each period), looked at "
        "again as its labels arrive",
        gt=0,
    )
    cohorts: int = env_field(
        "MONITOR_COHORTS",
        45,
        "cohorts (periods) looked at again at each check: longer than the label horizon (0: none)",
        ge=0,
    )
    quality_min_labelled: int = env_field(
        "QUALITY_MIN_LABELLED", 100, "live quality judged from this many labels", ge=1
    )
    quality_floor_roc_auc: float = env_field(
        "QUALITY_FLOOR_ROC_AUC", 0.75, "alarm below (live, from feedback; 0 disables)"
    )
    quality_floor_recall: float = env_field(
        "QUALITY_FLOOR_RECALL", 0.60, "alarm below (live, at the model threshold; 0 disables)"
    )
    quality_floor_f1: float = env_field("QUALITY_FLOOR_F1", 0.0, "alarm below (0 disables)")
    trigger: Literal["local", "jenkins", "log"] = env_field(
        "RETRAIN_TRIGGER", "local", "local, jenkins or log"
    )
    jenkins_url: str = env_field("JENKINS_URL", "http://localhost:8080", "Jenkins base URL")
    jenkins_user: str = env_field("JENKINS_USER", "", "user whose API token authenticates")
    jenkins_api_token: str = env_field("JENKINS_API_TOKEN", "", "that user's API token")
    jenkins_job: str = env_field("JENKINS_RETRAIN_JOB", "churn-retrain", "job name (folders: a/job/b)")
    jenkins_job_token: str = env_field("JENKINS_JOB_TOKEN", "", "the job's trigger-builds-remotely token")
    cooldown_seconds: float = env_field(
        "TRIGGER_COOLDOWN_SECONDS", 3600.0, "no new retrain within this after one started", ge=0
    )
    dedupe_seconds: float = env_field(
        "TRIGGER_DEDUPE_SECONDS", 21600.0, "same reason key ignored within this", ge=0
    )
    retrain_command_env: str | None = env_field("RETRAIN_COMMAND", None, "what the local backend runs")
    retrain_log_dir: RepoPath | None = env_field("RETRAIN_LOG_DIR", None, "the local backend's logs")
    data_dir: RepoPath | None = env_field(
        "DATA_DIR",
        None,
        "training's snapshots: the new-data count reads the champion's data from here (unreadable: "
        "every labelled record counts)",
    )
    interval_seconds: float = env_field("MONITOR_INTERVAL_SECONDS", 300.0, "period of `monitor loop`", gt=0)
    schedule_seconds: float = env_field(
        "RETRAIN_SCHEDULE_SECONDS",
        0.0,
        "`monitor loop`: a scheduled retrain this often, only when there is new data (0: off; "
        "the on-prem stack schedules the Jenkins job churn-retrain-scheduled instead)",
        ge=0,
    )
    metrics_host: str = env_field(
        "MONITOR_HOST",
        "127.0.0.1",
        "`monitor loop`: bind address of /metrics and POST /alerts (Compose: 0.0.0.0)",
    )
    metrics_port: int = env_field(
        "MONITOR_METRICS_PORT",
        9108,
        "`monitor loop`: /metrics and POST /alerts (0: any free port)",
        ge=0,
        le=65535,
    )
    webhook_token: str = env_field(
        "MONITOR_WEBHOOK_TOKEN", "", "bearer token POST /alerts needs (unset: the webhook refuses, 503)"
    )
    http_timeout: float = env_field(
        "MONITOR_HTTP_TIMEOUT_SECONDS",
        10.0,
        "`monitor loop`: a connection to /metrics or /alerts idle this long (no request, or a body not "
        "sent) is closed, its thread freed",
        gt=0,
        allow_inf_nan=False,
    )
    webhook_max_bytes: int = env_field(
        "MONITOR_WEBHOOK_MAX_BYTES",
        1_048_576,
        "`monitor loop`: a POST /alerts body over this many bytes is refused (413)",
        ge=1,
    )
    reports_uri: str | None = env_field(
        "MONITOR_REPORTS_URI", None, "HTML reports: a folder or s3://bucket/prefix"
    )
    service_url: str = env_field(
        "SERVICE_URL", "http://127.0.0.1:8000", "model service (rollback asks it to reload)"
    )
    api_key_env: str | None = env_field(
        "SERVICE_API_KEY", None, "X-API-Key for the service (default: first of API_KEYS)"
    )
    api_keys_env: str = env_field(
        "API_KEYS", "", "the service's keys (the first one is used when SERVICE_API_KEY is unset)"
    )
    admin_token: str = env_field("ADMIN_TOKEN", "", "bearer token of POST /v1/admin/reload")
    guard_enabled: bool = env_field(
        "GUARD_ENABLED", True, "`monitor loop` runs the post-promotion guard (bounds: the config's guard:)"
    )
    guard_interval_seconds: float = env_field(
        "GUARD_INTERVAL_SECONDS",
        15.0,
        "period of the post-promotion guard's check",
        gt=0,
        allow_inf_nan=False,
    )
    rollback_timeout: float = env_field(
        "ROLLBACK_TIMEOUT_SECONDS",
        60.0,
        "wait this long for the service to serve it",
        gt=0,
        allow_inf_nan=False,
    )

    @field_validator("trigger", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("jenkins_url", "service_url")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def model_post_init(self, context: object) -> None:
        super().model_post_init(context)
        if self.reports_uri is None:
            self.reports_uri = str(self.state_dir / "reports" / "monitoring")
        elif not self.reports_uri.startswith("s3://"):
            self.reports_uri = str(repo_path(self.reports_uri))

    @property
    def drift(self) -> DriftSettings:
        return DriftSettings(
            num_method=self.drift_num_method,
            num_threshold=self.drift_num_threshold,
            cat_method=self.drift_cat_method,
            cat_threshold=self.drift_cat_threshold,
            share_threshold=self.drift_share_threshold,
            prediction_method=self.prediction_drift_method,
            prediction_threshold=self.prediction_drift_threshold,
            missing_share_delta=self.missing_share_delta,
            unseen_category_share=self.unseen_category_share,
        )

    @property
    def quality(self) -> QualitySettings:
        floors = {
            "roc_auc": self.quality_floor_roc_auc,
            "recall": self.quality_floor_recall,
            "f1": self.quality_floor_f1,
        }
        return QualitySettings(self.quality_min_labelled, {k: v for k, v in floors.items() if v > 0})

    @property
    def jenkins(self) -> JenkinsSettings:
        return JenkinsSettings(
            self.jenkins_url,
            self.jenkins_user,
            self.jenkins_api_token,
            self.jenkins_job,
            self.jenkins_job_token,
        )

    @property
    def retrain_command(self) -> list[str]:
        if self.retrain_command_env:
            return shlex.split(self.retrain_command_env)
        return [sys.executable, "-m", "training.retrain"]

    @property
    def api_key(self) -> str:
        return self.api_key_env or self.api_keys_env.split(",")[0].strip()


__all__ = ["MonitorSettings", "DriftSettings", "QualitySettings", "JenkinsSettings"]
