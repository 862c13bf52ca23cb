"""Generates the Grafana dashboards in grafana/dashboards/*.json (committed; a test checks they are current).

    python -m tools.build_dashboards          # rewrite the JSON files
    python -m tools.build_dashboards --check  # exit 1 if a file differs from what this script makes

Dashboards are code, written with Grafana's typed builders (grafana-foundation-sdk, a dev dependency): one
place lists every query, so the tests can evaluate each PromQL expression against a real Prometheus and each
SQL query against a real PostgreSQL. The SDK places the panels left to right, wrapping at 24 columns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Self

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BarGaugeDisplayMode, BigValueTextMode, VizOrientation
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
)

OUT = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"

PROM = DataSourceRef("prometheus", "prometheus")
CHURN_DB = DataSourceRef("grafana-postgresql-datasource", "churn-db")
MLFLOW_DB = DataSourceRef("grafana-postgresql-datasource", "mlflow-db")

Panel = cogbuilder.Builder  # any of the SDK's panel builders (stat.Panel, timeseries.Panel, ...)


class SqlQuery(cogvariants.Dataquery, cogbuilder.Builder["SqlQuery"]):
    """A PostgreSQL target: the SDK has no builder for this data source, so it is the SDK's documented
    extension point (a custom Dataquery that serialises itself)."""

    def __init__(self, datasource: DataSourceRef, query: str, fmt: str, ref_id: str = "A") -> None:
        self.datasource, self.raw_sql, self.format = datasource, " ".join(query.split()), fmt
        self.ref_id = ref_id

    def build(self) -> Self:
        return self

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "rawSql": self.raw_sql,
            "format": self.format,
            "editorMode": "code",
            "rawQuery": True,
        }


def prom(panel: Panel, title: str, *exprs: tuple[str, str], w: int = 12, h: int = 8) -> Panel:
    """`panel` showing the PromQL `exprs`, each an (expression, legend) pair."""
    targets = [
        prometheus.Dataquery()
        .ref_id(chr(ord("A") + i))
        .datasource(PROM)
        .expr(expr)
        .legend_format(legend)
        .range()
        for i, (expr, legend) in enumerate(exprs)
    ]
    return panel.title(title).datasource(PROM).targets(targets).span(w).height(h)


def sql(
    panel: Panel, title: str, ds: DataSourceRef, query: str, fmt: str = "table", w: int = 24, h: int = 8
) -> Panel:
    """`panel` showing one SQL query of the PostgreSQL data source `ds`."""
    return panel.title(title).datasource(ds).with_target(SqlQuery(ds, query, fmt)).span(w).height(h)


# Every move of the champion alias (core.store.champion_moves, written by core.rollout) as an annotation on
# every dashboard's time series: the gate's promotion, a retrain's, a forced one, a rollback, the guard's.
CHAMPION_MOVES = """
    SELECT at AS "time",
           kind || ': v' || coalesce(from_version, '-') || ' -> v' || to_version || ' by ' || "by" || ': '
           || left(reason, 300) AS text,
           model_name || ',' || kind AS tags
    FROM champion_moves WHERE $__timeFilter(at) ORDER BY at"""


def champion_moves() -> dashboard.AnnotationQuery:
    # the SDK's AnnotationTarget only knows the built-in Grafana source: a PostgreSQL target instead
    return (
        dashboard.AnnotationQuery()
        .name("Champion moves")
        .datasource(CHURN_DB)
        .enable(True)
        .icon_color("purple")
        .target(SqlQuery(CHURN_DB, CHAMPION_MOVES, "table", ref_id="Anno"))  # type: ignore[arg-type]
    )


def board(
    uid: str, title: str, description: str, tags: list[str], panels: list[Panel]
) -> dashboard.Dashboard:
    b = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["churnops", *tags])
        .timezone("browser")
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("30s")
        .time("now-6h", "now")
        .link(
            dashboard.DashboardLink("churnops")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["churnops"])
            .as_dropdown(True)
        )
        .annotation(champion_moves())
    )
    for n, panel in enumerate(panels, 1):
        model = panel.id(n).build()
        if model.options is None:  # the SDK would write "options": null, which Grafana's UI rejects
            model.options = {}  # (grafana/grafana-foundation-sdk#1203)
        b.with_panel(panel)
    return b


def service() -> dashboard.Dashboard:
    red_above_2_percent = (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(None, "green"), Threshold(0.02, "red")])
    )
    return board(
        "churnops-service",
        "Churn model service",
        "Traffic, latency and errors of the model service replicas (prometheus-flask-exporter, multiprocess mode).",
        ["service"],
        [
            prom(stat.Panel(), "Replicas up", ('sum(up{job="model-service"})', "up"), w=6, h=4),
            prom(
                stat.Panel().unit("reqps"),
                "Requests/s",
                ("sum(rate(flask_http_request_total[5m]))", "req/s"),
                w=6,
                h=4,
            ),
            prom(
                stat.Panel().unit("percentunit").thresholds(red_above_2_percent),
                "Error ratio (5xx)",
                (
                    'sum(rate(flask_http_request_total{status=~"5.."}[5m])) / clamp_min(sum(rate(flask_http_request_total[5m])), 1e-9)',
                    "5xx",
                ),
                w=6,
                h=4,
            ),
            prom(
                stat.Panel()
                .text_mode(BigValueTextMode.NAME)
                .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])),
                "Model version served",
                ("max by (model_version) (model_service_model_info)", "v{{model_version}}"),
                w=6,
                h=4,
            ),
            prom(
                timeseries.Panel().unit("reqps"),
                "Requests/s by status",
                ("sum by (status) (rate(flask_http_request_total[5m]))", "{{status}}"),
            ),
            prom(
                timeseries.Panel().unit("s"),
                "Latency of /v1/predict",
                *(
                    (
                        f'histogram_quantile({q}, sum by (le) (rate(flask_http_request_duration_seconds_bucket{{endpoint="v1.predict"}}[5m])))',
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ),
            ),
            prom(
                timeseries.Panel().unit("s"),
                "Latency p95 by endpoint",
                (
                    "histogram_quantile(0.95, sum by (le, endpoint) (rate(flask_http_request_duration_seconds_bucket[5m])))",
                    "{{endpoint}}",
                ),
            ),
            prom(
                timeseries.Panel().unit("ops"),
                "Predictions/s by model version",
                ("sum by (model_version) (rate(model_service_predictions_total[5m]))", "v{{model_version}}"),
            ),
            prom(
                timeseries.Panel().unit("reqps"),
                "Errors/s by status (4xx, 5xx)",
                ('sum by (status) (rate(flask_http_request_total{status=~"[45].."}[5m]))', "{{status}}"),
            ),
            prom(
                timeseries.Panel(),
                "Model reloads",
                ("sum by (result) (increase(model_service_reloads_total[15m]))", "{{result}}"),
            ),
            prom(
                timeseries.Panel().unit("bytes"),
                "Prediction log: spool waiting for the database (503 past SPOOL_MAX_BYTES)",
                ("max(model_service_log_spool_backlog_bytes)", "bytes waiting"),
            ),
            prom(
                timeseries.Panel().unit("ops"),
                "Prediction log: records/s written, replayed, refused",
                ("sum(rate(model_service_log_written_records_total[5m]))", "written"),
                ("sum(rate(model_service_log_replayed_records_total[5m]))", "replayed from the spool"),
                ("sum(rate(model_service_log_refused_records_total[5m]))", "refused (backpressure)"),
            ),
        ],
    )


def model() -> dashboard.Dashboard:
    return board(
        "churnops-model",
        "Churn model outputs",
        "What the served model predicts: score distribution and labels, by model version.",
        ["model"],
        [
            prom(
                timeseries.Panel().unit("percentunit").min(0).max(1),
                "Score quantiles",
                *(
                    (
                        f"histogram_quantile({q}, sum by (le) (rate(model_service_prediction_score_bucket[15m])))",
                        f"q{int(q * 100)}",
                    )
                    for q in (0.1, 0.5, 0.9)
                ),
            ),
            prom(
                bargauge.Panel()
                .display_mode(BarGaugeDisplayMode.GRADIENT)
                .orientation(VizOrientation.VERTICAL)
                .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])),  # the SDK's default: none
                "Score distribution (last hour)",
                ("sum by (le) (increase(model_service_prediction_score_bucket[1h]))", "{{le}}"),
            ),
            prom(
                timeseries.Panel().unit("percentunit"),
                "Predicted churn share",
                (
                    'sum(rate(model_service_predictions_total{label="1"}[15m])) / clamp_min(sum(rate(model_service_predictions_total[15m])), 1e-9)',
                    "churn share",
                ),
            ),
            prom(
                timeseries.Panel().unit("ops"),
                "Predictions/s by label and version",
                (
                    "sum by (label, model_version) (rate(model_service_predictions_total[5m]))",
                    "label {{label}} v{{model_version}}",
                ),
            ),
        ],
    )


def drift() -> dashboard.Dashboard:
    return board(
        "churnops-drift",
        "Churn drift and live quality",
        "Evidently drift of the recent prediction window against the reference, and live quality from "
        "feedback labels (monitor metrics and history).",
        ["drift", "quality"],
        [
            prom(
                timeseries.Panel().unit("percentunit").min(0).max(1),
                "Share of drifted features",
                ("monitor_drift_share", "drift share"),
            ),
            prom(
                timeseries.Panel(), "Drift score by feature", ("monitor_feature_drift_score", "{{feature}}")
            ),
            prom(
                timeseries.Panel(),
                "Prediction (score) drift",
                ("monitor_prediction_drift_score", "score drift"),
            ),
            prom(
                timeseries.Panel().min(0).max(1),
                "Live quality (labelled feedback)",
                ("monitor_live_quality", "{{metric}}"),
            ),
            prom(
                timeseries.Panel().min(0).max(1),
                "Quality estimated without labels (CBPE) beside live quality",
                ('monitor_estimated_quality{bound="value"}', "estimated {{metric}}"),
                ('monitor_estimated_quality{bound="low"}', "estimated {{metric}} (band low)"),
                ("monitor_live_quality", "live {{metric}}"),
            ),
            prom(
                timeseries.Panel(),
                "Estimated drop against the champion's reference (alarm past estimate.max_drop)",
                ("monitor_estimated_quality_drop", "{{metric}}"),
                ("monitor_estimated_harm", "alarm (1)"),
            ),
            prom(
                timeseries.Panel().min(0).max(1),
                "Per cohort: ROC AUC estimated when scored beside realized once its labels came",
                ('monitor_cohort_quality{metric="roc_auc"}', "{{kind}}, cohort scored {{scored}}"),
                ("monitor_cohort_labelled_share", "labelled share, cohort scored {{scored}}"),
            ),
            prom(
                timeseries.Panel(),
                "The estimate's error on labelled cohorts (realized minus estimated; alert past 0.1)",
                ('monitor_estimate_error{stat="mean_abs"}', "{{metric}} mean absolute"),
                ('monitor_estimate_error{stat="mean"}', "{{metric}} mean (negative: too hopeful)"),
            ),
            prom(
                timeseries.Panel().min(0),
                "New data: labelled records since the champion was trained",
                ("monitor_labelled_since_training", "labelled since training"),
                ("monitor_source_changed", "source changed (1)"),
            ),
            prom(
                stat.Panel(),
                "Age of the champion's data (days)",
                ("monitor_champion_data_age_seconds / 86400", "days"),
                w=6,
                h=4,
            ),
            prom(
                stat.Panel(),
                "Minutes since the last monitoring run",
                ("(time() - monitor_last_run_timestamp_seconds) / 60", "minutes"),
                w=6,
                h=4,
            ),
            prom(
                timeseries.Panel().min(0).max(1),
                "Labels due but missing, beyond the share that never comes back (alert past 0.2 for 1 h)",
                ("monitor_labels_overdue_share", "largest overdue share of a cohort"),
                w=24,
            ),
            sql(
                table.Panel(),
                "Monitoring history",
                CHURN_DB,
                """
                SELECT started_at AS "time", status, model_version, window_size, drift_share, drifted_features,
                       prediction_drift_score, n_labelled, roc_auc, recall, alarm, report_uri
                FROM monitoring_runs ORDER BY started_at DESC LIMIT 50""",
            ),
            sql(
                timeseries.Panel(),
                "Drift share and ROC AUC over time (history)",
                CHURN_DB,
                """
                SELECT started_at AS "time", drift_share, roc_auc FROM monitoring_runs
                WHERE status <> 'skipped' ORDER BY started_at""",
                fmt="time_series",
            ),
            prom(
                stat.Panel(),
                "Guard: versions blocked (rolled back, awaiting a person)",
                ("max by (model_name) (monitor_guard_blocked_versions)", "{{model_name}}"),
                w=6,
                h=4,
            ),
            prom(
                timeseries.Panel(),
                "Guard: checks by outcome (watching, breach, idle)",
                ("sum by (outcome) (increase(monitor_guard_checks_total[15m]))", "{{outcome}}"),
                w=18,
                h=4,
            ),
            sql(
                table.Panel(),
                "Rollbacks (a person or the guard: who, why, served)",
                CHURN_DB,
                """
                SELECT at AS "time", by, from_version, to_version, served, reason, detail FROM rollbacks
                ORDER BY at DESC LIMIT 20""",
            ),
            sql(
                table.Panel(),
                "Retrain triggers",
                CHURN_DB,
                """
                SELECT created_at AS "time", backend, source, status, reason, detail FROM trigger_events
                ORDER BY created_at DESC LIMIT 20""",
            ),
        ],
    )


def pipeline() -> dashboard.Dashboard:
    return board(
        "churnops-pipeline",
        "Churn pipeline: training, gate, registry",
        "Training runs, their test metrics and the model versions behind each alias (MLflow's PostgreSQL store).",
        ["pipeline"],
        [
            sql(
                table.Panel(),
                "Aliases",
                MLFLOW_DB,
                """
                SELECT a.name AS model, a.alias, a.version, to_timestamp(v.creation_time / 1000.0) AS registered,
                       v.run_id FROM registered_model_aliases a JOIN model_versions v
                       ON v.name = a.name AND v.version = a.version ORDER BY a.name, a.alias""",
                w=12,
                h=6,
            ),
            sql(
                table.Panel(),
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
            ),
            sql(
                table.Panel(),
                "Model versions",
                MLFLOW_DB,
                """
                SELECT v.name AS model, v.version, to_timestamp(v.creation_time / 1000.0) AS "time", v.status,
                       v.run_id FROM model_versions v ORDER BY v.creation_time DESC LIMIT 20""",
                w=12,
                h=6,
            ),
            sql(
                table.Panel(),
                "Gate decisions and promotions",
                MLFLOW_DB,
                """
                SELECT t.name AS model, t.version, t.key, t.value FROM model_version_tags t
                WHERE t.key IN ('gate', 'promoted_at', 'promoted_by', 'promotion_reason', 'replaced_version')
                ORDER BY t.version DESC, t.key LIMIT 50""",
                w=12,
                h=6,
            ),
            sql(
                table.Panel(),
                "Champion timeline (every move: who, why, records served)",
                CHURN_DB,
                """
                SELECT m.at AS "time", m.model_name AS model, m.kind, m.from_version, m.to_version, m."by",
                       (SELECT count(*) FROM predictions p WHERE p.model_name = m.model_name
                          AND p.model_version = m.to_version AND p.created_at >= m.at
                          AND p.created_at < coalesce((SELECT min(n.at) FROM champion_moves n
                              WHERE n.model_name = m.model_name AND n.at > m.at), now())) AS records_served,
                       m.reason FROM champion_moves m ORDER BY m.at DESC LIMIT 50""",
                w=18,
                h=8,
            ),
            prom(stat.Panel(), "MLflow server up", ('up{job="mlflow"}', "mlflow"), w=6, h=4),
        ],
    )


BOARDS = (service, model, drift, pipeline)


def render() -> dict[str, str]:
    return {
        f"{make.__name__}.json": json.dumps(make().build(), cls=JSONEncoder, indent=2) + "\n"
        for make in BOARDS
    }


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
