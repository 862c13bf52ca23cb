"""Generates the Grafana dashboards in grafana/dashboards/*.json (committed; a test checks they are current).

    python -m tools.build_dashboards          # rewrite the JSON files
    python -m tools.build_dashboards --check  # exit 1 if a file differs from what this script makes

Dashboards are code: one place lists every query, so the tests can evaluate each PromQL expression
against a real Prometheus and each SQL query against a real PostgreSQL.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"

PROM = {"type": "prometheus", "uid": "prometheus"}
CHURN_DB = {"type": "grafana-postgresql-datasource", "uid": "churn-db"}
MLFLOW_DB = {"type": "grafana-postgresql-datasource", "uid": "mlflow-db"}

SCHEMA_VERSION = 39


class Board:
    def __init__(self, uid: str, title: str, description: str, tags: list[str]) -> None:
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.panels: list[dict] = []
        self._x = self._y = 0

    def _place(self, w: int, h: int) -> dict:
        if self._x + w > 24:
            self._x, self._y = 0, self._y + h
        pos = {"x": self._x, "y": self._y, "w": w, "h": h}
        self._x += w
        return pos

    def _panel(self, kind: str, title: str, targets: list[dict], w: int, h: int, **extra) -> None:
        panel = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "datasource": targets[0]["datasource"],
            "gridPos": self._place(w, h),
            "targets": targets,
            "fieldConfig": {"defaults": extra.pop("defaults", {}), "overrides": []},
            "options": extra.pop("options", {}),
        }
        panel.update(extra)
        self.panels.append(panel)

    def prom(
        self, kind: str, title: str, exprs: list[tuple[str, str]], w: int = 12, h: int = 8, **extra
    ) -> None:
        targets = [
            {
                "refId": chr(ord("A") + i),
                "datasource": PROM,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
            for i, (expr, legend) in enumerate(exprs)
        ]
        self._panel(kind, title, targets, w, h, **extra)

    def sql(
        self,
        kind: str,
        title: str,
        datasource: dict,
        query: str,
        w: int = 24,
        h: int = 8,
        fmt: str = "table",
        **extra,
    ) -> None:
        target = {
            "refId": "A",
            "datasource": datasource,
            "rawSql": " ".join(query.split()),
            "format": fmt,
            "editorMode": "code",
            "rawQuery": True,
        }
        self._panel(kind, title, [target], w, h, **extra)

    def json(self) -> dict:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["churnops", *self.tags],
            "timezone": "browser",
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "timepicker": {},
            "templating": {"list": []},
            "annotations": {"list": []},
            "links": [{"type": "dashboards", "tags": ["churnops"], "asDropdown": True, "title": "churnops"}],
            "panels": self.panels,
        }


def service() -> Board:
    b = Board(
        "churnops-service",
        "Churn model service",
        "Traffic, latency and errors of the model service "
        "replicas (prometheus-flask-exporter, multiprocess mode).",
        ["service"],
    )
    b.prom("stat", "Replicas up", [('sum(up{job="model-service"})', "up")], w=6, h=4)
    b.prom(
        "stat",
        "Requests/s",
        [("sum(rate(flask_http_request_total[5m]))", "req/s")],
        w=6,
        h=4,
        defaults={"unit": "reqps"},
    )
    b.prom(
        "stat",
        "Error ratio (5xx)",
        [
            (
                'sum(rate(flask_http_request_total{status=~"5.."}[5m])) / clamp_min(sum(rate(flask_http_request_total[5m])), 1e-9)',
                "5xx",
            )
        ],
        w=6,
        h=4,
        defaults={
            "unit": "percentunit",
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": "green", "value": None}, {"color": "red", "value": 0.02}],
            },
        },
    )
    b.prom(
        "stat",
        "Model version served",
        [("max by (model_version) (model_service_model_info)", "v{{model_version}}")],
        w=6,
        h=4,
        options={"textMode": "name", "reduceOptions": {"calcs": ["lastNotNull"]}},
    )
    b.prom(
        "timeseries",
        "Requests/s by status",
        [("sum by (status) (rate(flask_http_request_total[5m]))", "{{status}}")],
        defaults={"unit": "reqps"},
    )
    b.prom(
        "timeseries",
        "Latency of /v1/predict",
        [
            (
                f'histogram_quantile({q}, sum by (le) (rate(flask_http_request_duration_seconds_bucket{{endpoint="v1.predict"}}[5m])))',
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        defaults={"unit": "s"},
    )
    b.prom(
        "timeseries",
        "Latency p95 by endpoint",
        [
            (
                "histogram_quantile(0.95, sum by (le, endpoint) (rate(flask_http_request_duration_seconds_bucket[5m])))",
                "{{endpoint}}",
            )
        ],
        defaults={"unit": "s"},
    )
    b.prom(
        "timeseries",
        "Predictions/s by model version",
        [("sum by (model_version) (rate(model_service_predictions_total[5m]))", "v{{model_version}}")],
        defaults={"unit": "ops"},
    )
    b.prom(
        "timeseries",
        "Errors/s by status (4xx, 5xx)",
        [('sum by (status) (rate(flask_http_request_total{status=~"[45].."}[5m]))', "{{status}}")],
        defaults={"unit": "reqps"},
    )
    b.prom(
        "timeseries",
        "Model reloads",
        [("sum by (result) (increase(model_service_reloads_total[15m]))", "{{result}}")],
    )
    return b


def model() -> Board:
    b = Board(
        "churnops-model",
        "Churn model outputs",
        "What the served model predicts: score distribution and labels, by model version.",
        ["model"],
    )
    b.prom(
        "timeseries",
        "Score quantiles",
        [
            (
                f"histogram_quantile({q}, sum by (le) (rate(model_service_prediction_score_bucket[15m])))",
                f"q{int(q * 100)}",
            )
            for q in (0.1, 0.5, 0.9)
        ],
        defaults={"unit": "percentunit", "min": 0, "max": 1},
    )
    b.prom(
        "bargauge",
        "Score distribution (last hour)",
        [("sum by (le) (increase(model_service_prediction_score_bucket[1h]))", "{{le}}")],
        options={"displayMode": "gradient", "orientation": "vertical"},
    )
    b.prom(
        "timeseries",
        "Predicted churn share",
        [
            (
                'sum(rate(model_service_predictions_total{label="1"}[15m])) / clamp_min(sum(rate(model_service_predictions_total[15m])), 1e-9)',
                "churn share",
            )
        ],
        defaults={"unit": "percentunit"},
    )
    b.prom(
        "timeseries",
        "Predictions/s by label and version",
        [
            (
                "sum by (label, model_version) (rate(model_service_predictions_total[5m]))",
                "label {{label}} v{{model_version}}",
            )
        ],
        defaults={"unit": "ops"},
    )
    return b


def drift() -> Board:
    b = Board(
        "churnops-drift",
        "Churn drift and live quality",
        "Evidently drift of the recent prediction window "
        "against the reference, and live quality from feedback labels (monitor metrics and history).",
        ["drift", "quality"],
    )
    b.prom(
        "timeseries",
        "Share of drifted features",
        [("monitor_drift_share", "drift share")],
        defaults={"unit": "percentunit", "min": 0, "max": 1},
    )
    b.prom("timeseries", "Drift score by feature", [("monitor_feature_drift_score", "{{feature}}")])
    b.prom("timeseries", "Prediction (score) drift", [("monitor_prediction_drift_score", "score drift")])
    b.prom(
        "timeseries",
        "Live quality (labelled feedback)",
        [("monitor_live_quality", "{{metric}}")],
        defaults={"min": 0, "max": 1},
    )
    b.prom(
        "timeseries",
        "New data: labelled records since the champion was trained",
        [
            ("monitor_labelled_since_training", "labelled since training"),
            ("monitor_source_changed", "source changed (1)"),
        ],
        defaults={"min": 0},
    )
    b.prom(
        "stat",
        "Age of the champion's data (days)",
        [("monitor_champion_data_age_seconds / 86400", "days")],
        w=6,
        h=4,
    )
    b.prom(
        "stat",
        "Minutes since the last monitoring run",
        [("(time() - monitor_last_run_timestamp_seconds) / 60", "minutes")],
        w=6,
        h=4,
    )
    b.sql(
        "table",
        "Monitoring history",
        CHURN_DB,
        """
        SELECT started_at AS "time", status, model_version, window_size, drift_share, drifted_features,
               prediction_drift_score, n_labelled, roc_auc, recall, alarm, report_uri
        FROM monitoring_runs ORDER BY started_at DESC LIMIT 50""",
        w=18,
        h=8,
    )
    b.sql(
        "timeseries",
        "Drift share and ROC AUC over time (history)",
        CHURN_DB,
        """
        SELECT started_at AS "time", drift_share, roc_auc FROM monitoring_runs
        WHERE status <> 'skipped' ORDER BY started_at""",
        fmt="time_series",
    )
    b.prom(
        "stat",
        "Guard: versions blocked (rolled back, awaiting a person)",
        [("max by (model_name) (monitor_guard_blocked_versions)", "{{model_name}}")],
        w=6,
        h=4,
    )
    b.prom(
        "timeseries",
        "Guard: checks by outcome (watching, breach, idle)",
        [("sum by (outcome) (increase(monitor_guard_checks_total[15m]))", "{{outcome}}")],
        w=18,
        h=4,
    )
    b.sql(
        "table",
        "Rollbacks (a person or the guard: who, why, served)",
        CHURN_DB,
        """
        SELECT at AS "time", by, from_version, to_version, served, reason, detail FROM rollbacks
        ORDER BY at DESC LIMIT 20""",
    )
    b.sql(
        "table",
        "Retrain triggers",
        CHURN_DB,
        """
        SELECT created_at AS "time", backend, source, status, reason, detail FROM trigger_events
        ORDER BY created_at DESC LIMIT 20""",
    )
    return b


def pipeline() -> Board:
    b = Board(
        "churnops-pipeline",
        "Churn pipeline: training, gate, registry",
        "Training runs, their test "
        "metrics and the model versions behind each alias (MLflow's PostgreSQL store).",
        ["pipeline"],
    )
    b.sql(
        "table",
        "Aliases",
        MLFLOW_DB,
        """
        SELECT a.name AS model, a.alias, a.version, to_timestamp(v.creation_time / 1000.0) AS registered,
               v.run_id FROM registered_model_aliases a JOIN model_versions v
               ON v.name = a.name AND v.version = a.version ORDER BY a.name, a.alias""",
        w=12,
        h=6,
    )
    b.sql(
        "table",
        "Last training runs",
        MLFLOW_DB,
        """
        SELECT to_timestamp(r.start_time / 1000.0) AS "time", r.name, r.status,
               round(((r.end_time - r.start_time) / 1000.0)::numeric, 1) AS seconds,
               (SELECT m.value FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'test_roc_auc')
               AS test_roc_auc
        FROM runs r WHERE r.lifecycle_stage = 'active' ORDER BY r.start_time DESC LIMIT 20""",
        w=12,
        h=6,
    )
    b.sql(
        "table",
        "Model versions",
        MLFLOW_DB,
        """
        SELECT v.name AS model, v.version, to_timestamp(v.creation_time / 1000.0) AS "time", v.status,
               v.run_id FROM model_versions v ORDER BY v.creation_time DESC LIMIT 20""",
        w=12,
        h=6,
    )
    b.sql(
        "table",
        "Gate decisions and promotions",
        MLFLOW_DB,
        """
        SELECT t.name AS model, t.version, t.key, t.value FROM model_version_tags t
        WHERE t.key IN ('gate', 'promoted_at', 'promoted_by', 'promotion_reason', 'replaced_version')
        ORDER BY length(t.version) DESC, t.version DESC, t.key LIMIT 50""",
        w=12,
        h=6,
    )
    b.prom("stat", "MLflow server up", [('up{job="mlflow"}', "mlflow")], w=6, h=4)
    return b


BOARDS = (service, model, drift, pipeline)


def render() -> dict[str, str]:
    return {f"{make.__name__}.json": json.dumps(make().json(), indent=2) + "\n" for make in BOARDS}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
        if stale:
            print(f"stale dashboards (run python -m tools.build_dashboards): {', '.join(stale)}")
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
