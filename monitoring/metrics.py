"""Prometheus metrics of the monitor (served by `python -m monitoring.monitor loop` on MONITOR_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()
LABELS = ("model_name",)

runs = Counter("monitor_runs_total", "Monitor checks by outcome", ["model_name", "status"], registry=REGISTRY)
last_run = Gauge(
    "monitor_last_run_timestamp_seconds", "When the last check finished", LABELS, registry=REGISTRY
)
last_status = Gauge(
    "monitor_last_run_status",
    "1 for the outcome of the last check (ok, drift, skipped, error)",
    ["model_name", "status"],
    registry=REGISTRY,
)
window = Gauge("monitor_window_records", "Records in the last checked window", LABELS, registry=REGISTRY)
drift_share = Gauge(
    "monitor_drift_share", "Share of features whose drift test flagged drift", LABELS, registry=REGISTRY
)
weighted_drift_share = Gauge(
    "monitor_weighted_drift_share",
    "Share of the model's feature importance held by drifted features",
    LABELS,
    registry=REGISTRY,
)
drift_level = Gauge(
    "monitor_drift_level", "The drift policy's level: 0 ok, 1 warning, 2 alarm", LABELS, registry=REGISTRY
)
drifted_features = Gauge("monitor_drifted_features", "Number of drifted features", LABELS, registry=REGISTRY)
feature_drift = Gauge(
    "monitor_feature_drift_score",
    "Drift score per feature (method and threshold as labels)",
    ["model_name", "feature", "method", "threshold"],
    registry=REGISTRY,
)
feature_drifted = Gauge(
    "monitor_feature_drifted",
    "1 when the feature's drift test flagged drift",
    ["model_name", "feature"],
    registry=REGISTRY,
)
prediction_drift = Gauge(
    "monitor_prediction_drift_score",
    "Drift score of the model score",
    ["model_name", "method", "threshold"],
    registry=REGISTRY,
)
alarm = Gauge("monitor_alarm", "1 when the last check crossed a threshold", LABELS, registry=REGISTRY)
quality = Gauge(
    "monitor_live_quality",
    "Live quality from feedback labels, at the model threshold",
    ["model_name", "metric"],
    registry=REGISTRY,
)
estimated_quality = Gauge(
    "monitor_estimated_quality",
    "Quality estimated without labels from the champion's probabilities (CBPE), at the model threshold; "
    "bound: value, or the low and high ends of its 95% band",
    ["model_name", "metric", "bound"],
    registry=REGISTRY,
)
estimated_drop = Gauge(
    "monitor_estimated_quality_drop",
    "The champion's estimate on its reference minus the window's estimate (no labels); positive: worse",
    ["model_name", "metric"],
    registry=REGISTRY,
)
estimated_harm = Gauge(
    "monitor_estimated_harm",
    "1 when an estimated metric of the last window dropped past its bound (estimate.max_drop)",
    LABELS,
    registry=REGISTRY,
)
cohort_quality = Gauge(
    "monitor_cohort_quality",
    "Per cohort (the window a monitoring run judged; scored: its first record's minute): quality estimated "
    "at the check without labels, and realized once enough of its labels arrived",
    ["model_name", "cohort", "scored", "metric", "kind"],
    registry=REGISTRY,
)
cohort_labelled = Gauge(
    "monitor_cohort_labelled_share",
    "Share of a cohort's records that have their label by now",
    ["model_name", "cohort", "scored"],
    registry=REGISTRY,
)
labels_overdue = Gauge(
    "monitor_labels_overdue_share",
    "Largest share of a cohort's records whose label is due by the log's watermark (labels.horizon_days) "
    "but missing, beyond the share that never comes back (labels.never_share); 0 when on time",
    ["model_name"],
    registry=REGISTRY,
)
estimate_error = Gauge(
    "monitor_estimate_error",
    "The estimate's error over the cohorts with enough labels, realized minus estimated: mean_abs, mean "
    "(negative: too hopeful), cohorts (how many)",
    ["model_name", "metric", "stat"],
    registry=REGISTRY,
)
labelled = Gauge(
    "monitor_labelled_records", "Records of the window with a feedback label", LABELS, registry=REGISTRY
)
model_version = Gauge(
    "monitor_model_version_info",
    "Champion version the last check compared against",
    ["model_name", "version"],
    registry=REGISTRY,
)
labels_since_training = Gauge(
    "monitor_labelled_since_training",
    "Labelled production records since the champion was trained (monitor_new_rows_since_training: those a "
    "retrain would add)",
    LABELS,
    registry=REGISTRY,
)
new_rows_since_training = Gauge(
    "monitor_new_rows_since_training",
    "Of the labelled records since the champion was trained, the rows a retrain would add (not already "
    "in the champion's data, within the schema and the missing shares; the retrain.new_labels bound "
    "counts these when the champion's snapshot is readable)",
    LABELS,
    registry=REGISTRY,
)
champion_data_age = Gauge(
    "monitor_champion_data_age_seconds",
    "Age of the champion's data: seconds since the champion was trained on its snapshot",
    LABELS,
    registry=REGISTRY,
)
source_changed = Gauge(
    "monitor_source_changed",
    "1 when the data source's content differs from the champion's source snapshot",
    LABELS,
    registry=REGISTRY,
)
waiting_cohort = Gauge(
    "monitor_waiting_cohort_labels",
    "A drift or quality alarm's retrain waiting for its window's labels: figure=labelled (come back), "
    "need (retrain.min_labels), records (in the drifted window); absent when nothing waits",
    [*LABELS, "figure"],
    registry=REGISTRY,
)
triggers = Counter(
    "monitor_retrain_triggers_total",
    "Retrain trigger decisions",
    ["model_name", "backend", "status", "source"],
    registry=REGISTRY,
)
alerts_received = Counter(
    "monitor_alert_webhooks_total", "Alertmanager webhook alerts received", ["status"], registry=REGISTRY
)

STATUSES = ("ok", "drift", "skipped", "error")


def record_status(model_name: str, status: str) -> None:
    runs.labels(model_name, status).inc()
    for s in STATUSES:
        last_status.labels(model_name, s).set(1 if s == status else 0)


# The post-promotion guard (monitoring.guard)
guard_watching = Gauge(
    "monitor_guard_watching",
    "1 while the guard watches the champion after its promotion (by version)",
    ["model_name", "version"],
    registry=REGISTRY,
)
guard_figure = Gauge(
    "monitor_guard_figure",
    "The guard's last figures of the watched champion (new) and the one it replaced (previous)",
    ["model_name", "figure", "side"],
    registry=REGISTRY,
)
guard_breach = Gauge(
    "monitor_guard_breach",
    "1 when the guard's last check found the watched champion out of its bounds",
    ["model_name"],
    registry=REGISTRY,
)
guard_rollbacks = Counter(
    "monitor_guard_rollbacks_total",
    "Champions the guard rolled back, by the version rolled back from and the figure that breached",
    ["model_name", "from_version", "figure"],
    registry=REGISTRY,
)
guard_checks = Counter(
    "monitor_guard_checks_total", "Guard checks, by outcome", ["model_name", "outcome"], registry=REGISTRY
)
guard_blocked = Gauge(
    "monitor_guard_blocked_versions",
    "Versions the guard rolled back and blocked from promotion (until a person lifts the block)",
    ["model_name"],
    registry=REGISTRY,
)
