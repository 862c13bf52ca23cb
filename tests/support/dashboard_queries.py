"""Every query of the dashboards and alert rules, run against the live servers.

PromQL (`promql_problems`): used by the stack tests (tests/support/stack_test.py on Compose,
tests/integration/test_stack_native.py natively): an expression must parse and return data; one that
only has data when something fails (5xx, failures) passes when the metric it reads exists.
SQL (`sql_problems`): every PostgreSQL panel's query and every dashboard's PostgreSQL annotation query
(the champion moves) runs on the database of its data source (churn-db: the loop's tables, mlflow-db:
MLflow's) and returns rows, unless its panel is about an event the run may not have had (EVENT_PANELS).
Grafana's `$__timeFilter(column)` macro becomes `column <= now()` (every row up to now) to run in psql.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ONLY_ON_FAILURE = ('status=~"5.."', 'status=~"[45].."', 'result="failure"')
EVENT_PANELS = ("Rollbacks",)  # panel titles starting so: rows only after such an event


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expression) of every Prometheus alert rule (its left-hand side), dashboard panel target and
    Grafana-managed alert rule on the Prometheus data source."""
    exprs = []
    for path in sorted((REPO / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                # the alert's condition without its threshold: the measured value must exist
                lhs = re.split(r"\s(?:>=|<=|==|!=|>|<)\s*[-0-9.e]+\s*$", rule["expr"].strip())[0]
                exprs.append((f"rule {rule['alert']}", lhs))
    for path in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if "expr" in target:
                    exprs.append((f"{path.stem}: {panel['title']}", target["expr"]))
    rules = yaml.safe_load((REPO / "grafana" / "provisioning" / "alerting" / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for data in rule["data"]:
                if data["datasourceUid"] == "prometheus":
                    exprs.append((f"grafana rule {rule['uid']}", data["model"]["expr"]))
    return exprs


def promql_problems(query: Callable[[str], dict]) -> tuple[int, list[str]]:
    """How many expressions were checked, and what is wrong with each that fails; `query` answers an
    expression with Prometheus' /api/v1/query JSON."""
    problems, exprs = [], promql_expressions()
    for where, expr in exprs:
        answer = query(expr)
        if answer.get("status") != "success":
            problems.append(f"{where}: {answer.get('error')} in {expr}")
        elif not answer["data"]["result"]:
            if any(marker in expr for marker in ONLY_ON_FAILURE):
                metric = re.search(r"([a-z_:]+)\{", expr).group(1)
                if not query(metric)["data"]["result"]:
                    problems.append(f"{where}: metric {metric} does not exist")
            else:
                problems.append(f"{where}: no data for {expr}")
    return len(exprs), problems


def without_macros(sql: str) -> str:
    """The query as psql can run it: Grafana's `$__timeFilter(column)` as `column <= now()`."""
    return re.sub(r"\$__timeFilter\(([^)]+)\)", r"\1 <= now()", sql)


def dashboard_sql() -> list[tuple[str, str, str]]:
    """(where, data source uid, SQL) of every PostgreSQL panel target and annotation query of the
    dashboards, Grafana's macros replaced (`without_macros`)."""
    queries = []
    for path in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for annotation in board.get("annotations", {}).get("list", []):
            target = annotation.get("target") or {}
            if "rawSql" in target:
                uid = (target.get("datasource") or annotation.get("datasource") or {})["uid"]
                where = f"{path.stem}: annotation {annotation['name']}"
                queries.append((where, uid, without_macros(target["rawSql"])))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if "rawSql" in target:
                    uid = (target.get("datasource") or panel.get("datasource") or {})["uid"]
                    queries.append((f"{path.stem}: {panel['title']}", uid, without_macros(target["rawSql"])))
    return queries


def sql_problems(run: Callable[[str, str], list]) -> tuple[int, list[str]]:
    """How many SQL queries were checked, and what is wrong with each that fails; `run(uid, sql)` returns
    the rows of `sql` on the database of data source `uid` (and raises what the database raises)."""
    problems, queries = [], dashboard_sql()
    for where, uid, sql in queries:
        try:
            rows = run(uid, sql)
        except Exception as exc:  # noqa: BLE001 - every failing query is reported, not only the first
            problems.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        if not rows and not where.split(": ", 1)[1].startswith(EVENT_PANELS):
            problems.append(f"{where}: no rows")
    return len(queries), problems
