"""Settings of the monitoring component (monitor, retrain trigger, rollback), read from the environment.

This is the one place where monitoring code reads its environment. Switching from the embedded default
to the on-prem stack is only a change of URLs (DATABASE_URL, MLFLOW_TRACKING_URI, MONITOR_REPORTS_URI,
RETRAIN_TRIGGER=jenkins, JENKINS_*).

| variable                  | default                                  | meaning                                       |
|---------------------------|------------------------------------------|-----------------------------------------------|
| DATABASE_URL              | sqlite:///var/service/service.db         | prediction log + monitoring history           |
| MLFLOW_TRACKING_URI       | training default (sqlite under var/)     | registry: champion, reference sample          |
| MODEL_NAME                | telco-churn                              | registered model name                         |
| MONITOR_WINDOW_SIZE       | 500                                      | at most this many most recent predictions     |
| MONITOR_WINDOW_MINUTES    | 60                                       | ... logged within this many minutes (0: any)  |
| MONITOR_MIN_WINDOW        | 200                                      | fewer records: the run is skipped             |
| DRIFT_NUM_METHOD          | wasserstein                              | Evidently method, numeric features            |
| DRIFT_NUM_THRESHOLD       | 0.2                                      | drifted when the distance is >= this          |
| DRIFT_CAT_METHOD          | jensenshannon                            | Evidently method, categorical/binary features |
| DRIFT_CAT_THRESHOLD       | 0.1                                      | drifted when the distance is >= this          |
| DRIFT_SHARE_THRESHOLD     | 0.1                                      | alarm when this share of features drifted     |
| PREDICTION_DRIFT_METHOD   | wasserstein                              | Evidently method for the score                |
| PREDICTION_DRIFT_THRESHOLD| 0.2                                      | score drift when the distance is >= this      |
| MISSING_SHARE_DELTA       | 0.1                                      | alarm when a feature's missing share rises more|
| UNSEEN_CATEGORY_SHARE     | 0.05                                     | alarm when this share of values is unseen     |
| QUALITY_MIN_LABELLED      | 100                                      | live quality judged from this many labels     |
| QUALITY_FLOOR_ROC_AUC     | 0.75                                     | alarm below (live, from feedback)             |
| QUALITY_FLOOR_RECALL      | 0.60                                     | alarm below (live, at the model threshold)    |
| QUALITY_FLOOR_F1          | 0.0                                      | alarm below (0 disables)                      |
| RETRAIN_TRIGGER           | local                                    | local / jenkins / log                         |
| JENKINS_URL               | http://localhost:8080                    | Jenkins base URL                              |
| JENKINS_USER              | (empty)                                  | user whose API token authenticates            |
| JENKINS_API_TOKEN         | (empty)                                  | that user's API token                         |
| JENKINS_RETRAIN_JOB       | churn-retrain                            | job name (folders: a/job/b)                   |
| JENKINS_JOB_TOKEN         | (empty)                                  | the job's "trigger builds remotely" token     |
| TRIGGER_COOLDOWN_SECONDS  | 3600                                     | no new retrain within this after one started  |
| TRIGGER_DEDUPE_SECONDS    | 21600                                    | same reason key ignored within this           |
| RETRAIN_COMMAND           | `<python> -m training.retrain`           | what the local backend runs                   |
| RETRAIN_LOG_DIR           | var/logs/retrain                         | the local backend's logs                      |
| MONITOR_INTERVAL_SECONDS  | 300                                      | period of `monitor loop`                      |
| MONITOR_METRICS_PORT      | 9108                                     | `monitor loop`: /metrics and POST /alerts     |
| MONITOR_WEBHOOK_TOKEN     | (empty)                                  | if set, POST /alerts needs this bearer token  |
| MONITOR_REPORTS_URI       | var/reports/monitoring                   | HTML reports: folder or s3://bucket/prefix    |
| S3_ENDPOINT_URL           | (empty)                                  | MinIO / S3 endpoint for s3:// report URIs     |
| AWS_ACCESS_KEY_ID         | (empty)                                  | S3 credentials                                |
| AWS_SECRET_ACCESS_KEY     | (empty)                                  | S3 credentials                                |
| SERVICE_URL               | http://127.0.0.1:8000                    | model service (rollback asks it to reload)    |
| SERVICE_API_KEY           | first of API_KEYS                        | X-API-Key for GET /v1/model, predict, feedback|
| ADMIN_TOKEN               | (empty)                                  | bearer token of POST /v1/admin/reload         |
| ROLLBACK_TIMEOUT_SECONDS  | 60                                       | wait this long for the service to serve it    |
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from training.settings import REPO_ROOT, _default_tracking_uri, _path

TRIGGER_BACKENDS = ("local", "jenkins", "log")


def default_database_url() -> str:
    return f"sqlite:///{_path('var/service/service.db')}"


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class DriftSettings:
    num_method: str = "wasserstein"
    num_threshold: float = 0.2
    cat_method: str = "jensenshannon"
    cat_threshold: float = 0.1
    share_threshold: float = 0.1
    prediction_method: str = "wasserstein"
    prediction_threshold: float = 0.2
    missing_share_delta: float = 0.1
    unseen_category_share: float = 0.05


@dataclass(frozen=True)
class QualitySettings:
    min_labelled: int = 100
    floors: dict[str, float] = field(default_factory=lambda: {"roc_auc": 0.75, "recall": 0.60})


@dataclass(frozen=True)
class JenkinsSettings:
    url: str = "http://localhost:8080"
    user: str = ""
    api_token: str = ""
    job: str = "churn-retrain"
    job_token: str = ""


@dataclass(frozen=True)
class MonitorSettings:
    database_url: str
    tracking_uri: str
    model_name: str
    window_size: int
    window_minutes: float
    min_window: int
    drift: DriftSettings
    quality: QualitySettings
    trigger: str
    jenkins: JenkinsSettings
    cooldown_seconds: float
    dedupe_seconds: float
    retrain_command: list[str]
    retrain_log_dir: Path
    interval_seconds: float
    metrics_port: int
    webhook_token: str
    reports_uri: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    service_url: str
    admin_token: str
    api_key: str
    rollback_timeout: float

    @classmethod
    def from_env(cls) -> MonitorSettings:
        env = os.environ.get
        trigger = (env("RETRAIN_TRIGGER") or "local").lower()
        if trigger not in TRIGGER_BACKENDS:
            raise ValueError(f"RETRAIN_TRIGGER '{trigger}' is not one of {', '.join(TRIGGER_BACKENDS)}")
        reports = env("MONITOR_REPORTS_URI") or "var/reports/monitoring"
        if not reports.startswith("s3://"):
            reports = str(_path(reports))
        floors = {
            "roc_auc": _float("QUALITY_FLOOR_ROC_AUC", 0.75),
            "recall": _float("QUALITY_FLOOR_RECALL", 0.60),
            "f1": _float("QUALITY_FLOOR_F1", 0.0),
        }
        command = env("RETRAIN_COMMAND")
        return cls(
            database_url=env("DATABASE_URL") or default_database_url(),
            tracking_uri=env("MLFLOW_TRACKING_URI") or _default_tracking_uri(),
            model_name=env("MODEL_NAME") or "telco-churn",
            window_size=_int("MONITOR_WINDOW_SIZE", 500),
            window_minutes=_float("MONITOR_WINDOW_MINUTES", 60),
            min_window=_int("MONITOR_MIN_WINDOW", 200),
            drift=DriftSettings(
                num_method=env("DRIFT_NUM_METHOD") or "wasserstein",
                num_threshold=_float("DRIFT_NUM_THRESHOLD", 0.2),
                cat_method=env("DRIFT_CAT_METHOD") or "jensenshannon",
                cat_threshold=_float("DRIFT_CAT_THRESHOLD", 0.1),
                share_threshold=_float("DRIFT_SHARE_THRESHOLD", 0.1),
                prediction_method=env("PREDICTION_DRIFT_METHOD") or "wasserstein",
                prediction_threshold=_float("PREDICTION_DRIFT_THRESHOLD", 0.2),
                missing_share_delta=_float("MISSING_SHARE_DELTA", 0.1),
                unseen_category_share=_float("UNSEEN_CATEGORY_SHARE", 0.05),
            ),
            quality=QualitySettings(
                min_labelled=_int("QUALITY_MIN_LABELLED", 100),
                floors={k: v for k, v in floors.items() if v > 0},
            ),
            trigger=trigger,
            jenkins=JenkinsSettings(
                url=(env("JENKINS_URL") or "http://localhost:8080").rstrip("/"),
                user=env("JENKINS_USER") or "",
                api_token=env("JENKINS_API_TOKEN") or "",
                job=env("JENKINS_RETRAIN_JOB") or "churn-retrain",
                job_token=env("JENKINS_JOB_TOKEN") or "",
            ),
            cooldown_seconds=_float("TRIGGER_COOLDOWN_SECONDS", 3600),
            dedupe_seconds=_float("TRIGGER_DEDUPE_SECONDS", 21600),
            retrain_command=shlex.split(command) if command else [sys.executable, "-m", "training.retrain"],
            retrain_log_dir=_path(env("RETRAIN_LOG_DIR") or "var/logs/retrain"),
            interval_seconds=_float("MONITOR_INTERVAL_SECONDS", 300),
            metrics_port=_int("MONITOR_METRICS_PORT", 9108),
            webhook_token=env("MONITOR_WEBHOOK_TOKEN") or "",
            reports_uri=reports,
            s3_endpoint=env("S3_ENDPOINT_URL") or "",
            s3_access_key=env("AWS_ACCESS_KEY_ID") or "",
            s3_secret_key=env("AWS_SECRET_ACCESS_KEY") or "",
            service_url=(env("SERVICE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            admin_token=env("ADMIN_TOKEN") or "",
            api_key=env("SERVICE_API_KEY") or (env("API_KEYS") or "").split(",")[0].strip(),
            rollback_timeout=_float("ROLLBACK_TIMEOUT_SECONDS", 60),
        )


__all__ = ["MonitorSettings", "DriftSettings", "QualitySettings", "JenkinsSettings", "REPO_ROOT"]
