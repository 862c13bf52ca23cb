"""Prometheus metrics of the service.

HTTP latency histograms and request counts by endpoint and status come from prometheus-flask-exporter
(`flask_http_request_duration_seconds`, `flask_http_request_total`). The service's own metrics are
defined here once per process (they are not registered in the default registry, so the app factory can
run several times in one process, e.g. in tests); each app gets a fresh registry holding them.

Under the server, PROMETHEUS_MULTIPROC_DIR is set (by model_service/server.py) before this module is imported,
so every value lives in the shared multiprocess folder and `/metrics` on any worker aggregates all
workers. Gauges say how they aggregate (`multiprocess_mode`).
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

PREFIX = "model_service"

PREDICTIONS = Counter(
    f"{PREFIX}_predictions",
    "Records scored, by model version and predicted label",
    ["model_version", "label"],
    registry=None,
)
PREDICT_ERRORS = Counter(
    f"{PREFIX}_prediction_errors",
    "Records of predict requests the model failed to score (5xx), by model version (the post-promotion "
    "guard compares versions on it)",
    ["model_version"],
    registry=None,
)
SHADOW_RECORDS = Counter(
    f"{PREFIX}_shadow_records",
    "Records handed to shadow scoring (the challenger beside the champion), by challenger version and "
    "outcome (scored, dropped: queue full, failed)",
    ["shadow_version", "outcome"],
    registry=None,
)
SCORES = Histogram(
    f"{PREFIX}_prediction_score",
    "Predicted probability of the positive class",
    ["model_version"],
    buckets=[i / 20 for i in range(1, 21)],
    registry=None,
)
BATCH_SIZE = Histogram(
    f"{PREFIX}_batch_size",
    "Records per predict request",
    buckets=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
    registry=None,
)
PREDICT_SECONDS = Histogram(
    f"{PREFIX}_model_predict_seconds",
    "Validation plus model time of a predict request",
    ["path"],
    registry=None,
    buckets=[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
)
VALIDATION_ERRORS = Counter(
    f"{PREFIX}_validation_errors", "Rejected requests, by kind and feature", ["kind", "field"], registry=None
)
EXPLAINED = Counter(
    f"{PREFIX}_explained_records",
    "Records explained by /v1/explain, by model version and method (not in the prediction counters)",
    ["model_version", "method"],
    registry=None,
)
UNKNOWN_CATEGORIES = Counter(
    f"{PREFIX}_unknown_categories",
    "Accepted records with a category the model did not see, by feature",
    ["feature"],
    registry=None,
)
MODEL_INFO = Gauge(
    f"{PREFIX}_model_info",
    "1 for the model version each worker serves",
    ["model_name", "model_version", "algorithm", "predictor"],
    multiprocess_mode="livemax",
    registry=None,
)
MODEL_LOADED = Gauge(
    f"{PREFIX}_model_loaded", "Workers with a model loaded", multiprocess_mode="livesum", registry=None
)
RELOADS = Counter(
    f"{PREFIX}_reloads", "Model reload attempts, by result and reason", ["result", "reason"], registry=None
)
RELOAD_FAILING = Gauge(
    f"{PREFIX}_reload_failing",
    "1 while the last reload attempt of a worker failed",
    multiprocess_mode="livemax",
    registry=None,
)
CHAMPION_MISSING = Gauge(
    f"{PREFIX}_champion_missing",
    "1 while the registry has no champion to serve (nothing promoted yet)",
    multiprocess_mode="livemax",
    registry=None,
)
LOG_WRITTEN = Counter(
    f"{PREFIX}_log_written_records",
    "Records the writer process moved from the spool into the prediction log database",
    registry=None,
)
LOG_SPOOLED = Counter(
    f"{PREFIX}_log_spooled_records",
    "Records kept in the spool because the database was unavailable when the writer first tried them",
    registry=None,
)
LOG_REPLAYED = Counter(
    f"{PREFIX}_log_replayed_records",
    "Records moved into the database after they waited (a database outage, or left by an earlier writer)",
    registry=None,
)
LOG_DROPPED = Counter(
    f"{PREFIX}_log_dropped_records", "Records lost: neither database nor spool took them", registry=None
)
LOG_DB_UP = Gauge(
    f"{PREFIX}_log_database_up",
    "1 when the prediction log database answers the writer process",
    multiprocess_mode="livemin",
    registry=None,
)
LOG_BACKLOG_BYTES = Gauge(
    f"{PREFIX}_log_spool_backlog_bytes",
    "Bytes of spool segments waiting for the prediction log database (max over the writer and workers: one "
    "folder)",
    multiprocess_mode="livemax",
    registry=None,
)
LOG_BACKLOG_AGE = Gauge(
    f"{PREFIX}_log_spool_backlog_age_seconds",
    "Age of the oldest spool segment waiting for the database (0: none waits)",
    multiprocess_mode="livemax",
    registry=None,
)
LOG_REFUSED = Counter(
    f"{PREFIX}_log_refused_records",
    "Records refused (503) because the spool's backlog is over SPOOL_MAX_BYTES or SPOOL_MAX_AGE_SECONDS",
    registry=None,
)
FEEDBACK = Counter(f"{PREFIX}_feedback", "Feedback requests, by outcome", ["outcome"], registry=None)

ALL = [
    PREDICTIONS,
    PREDICT_ERRORS,
    SHADOW_RECORDS,
    SCORES,
    BATCH_SIZE,
    PREDICT_SECONDS,
    VALIDATION_ERRORS,
    UNKNOWN_CATEGORIES,
    EXPLAINED,
    MODEL_INFO,
    MODEL_LOADED,
    RELOADS,
    RELOAD_FAILING,
    CHAMPION_MISSING,
    LOG_WRITTEN,
    LOG_SPOOLED,
    LOG_REPLAYED,
    LOG_DROPPED,
    LOG_DB_UP,
    LOG_BACKLOG_BYTES,
    LOG_BACKLOG_AGE,
    LOG_REFUSED,
    FEEDBACK,
]


def multiprocess() -> bool:
    """Whether prometheus_client keeps values in the multiprocess folder (it decides from
    PROMETHEUS_MULTIPROC_DIR when first imported; model_service/server.py sets it before the workers start)."""
    return values.ValueClass is not values.MutexValue


def registry() -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=True)
    for metric in ALL:
        reg.register(metric)
    return reg


class LogMetrics:
    """The prediction log's view of the metrics."""

    def written(self, n: int) -> None:
        LOG_WRITTEN.inc(n)

    def spooled(self, n: int) -> None:
        LOG_SPOOLED.inc(n)

    def replayed(self, n: int) -> None:
        LOG_REPLAYED.inc(n)

    def dropped(self, n: int) -> None:
        LOG_DROPPED.inc(n)

    def backlog(self, waiting_bytes: int, age_seconds: float) -> None:
        LOG_BACKLOG_BYTES.set(waiting_bytes)
        LOG_BACKLOG_AGE.set(age_seconds)

    def refused(self, n: int) -> None:
        LOG_REFUSED.inc(n)

    def db_up(self, ok: bool) -> None:
        LOG_DB_UP.set(1 if ok else 0)


_CHILDREN: dict[tuple, object] = {}


def child(metric, *labels: str):
    """`metric.labels(*labels)`, remembered: `labels()` takes the metric's lock and rebuilds the key on
    every call (a few us each, several per predict request). For the predict path's bounded label
    values only (model versions, predictor kinds, the two labels); the service never removes children."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN.setdefault(key, metric.labels(*labels))
    return found


SMALL_BATCH = 8  # up to this many values, plain observes are cheaper than the bucket counts


def observe_many(histogram, values: np.ndarray) -> None:
    """Observe a batch at once: one increment per bucket instead of one observe per value.

    A multiprocess observe writes to a memory-mapped file; for 1,000 scores that was ~1,000 writes per
    request. Uses the histogram's bucket counters (prometheus_client internals, stable for years);
    falls back to plain observes if they are not there (and for a few values, where numpy's
    bucketing costs more than it saves).
    """
    if values.size <= SMALL_BATCH:
        for v in values.tolist():
            histogram.observe(v)
        return
    buckets = getattr(histogram, "_upper_bounds", None)
    counters = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or counters is None or total is None or len(buckets) != len(counters):
        for v in values.tolist():
            histogram.observe(v)
        return
    # bucket i counts values <= upper bound i (and > the previous bound): like observe()
    idx = np.searchsorted(np.asarray(buckets), values, side="left")
    counts = np.bincount(idx, minlength=len(buckets))
    for i, c in enumerate(counts.tolist()):
        if c:
            counters[i].inc(c)
    total.inc(float(values.sum()))
