"""Every PromQL expression of the dashboards and alert rules, evaluated against a live Prometheus.

Used by the stack tests (tests/support/stack_test.py on Compose, tests/integration/test_stack_native.py natively):
an expression must parse and return data; one that only has data when something fails (5xx, failures)
passes when the metric it reads exists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ONLY_ON_FAILURE = ('status=~"5.."', 'status=~"[45].."', 'result="failure"')


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
