"""The PromQL the chart ships (alerting rules and dashboard) and the metric names it may use:
the operator's own registry and vLLM 0.33.0's metric names (tests/vllm/metric_names.txt)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "darwin-operator"
RULES = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
VLLM_NAMES = REPO / "tests" / "vllm" / "metric_names.txt"

# Grafana's variables as they are for every namespace and endpoint over the last hour.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$namespace": ".*",
    "$endpoint": ".*",
}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left"}
_KEYWORDS |= {"group_right", "bool", "offset", "inf", "nan", "atan2"}
# aggregation operators: `max by (x) (...)` puts a clause between the name and its parenthesis
_KEYWORDS |= {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
_KEYWORDS |= {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}


def alert_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_expressions() -> dict[str, str]:
    found = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets") or []:
            found[f"{panel['title']} / {target['refId']}"] = target["expr"]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query", "")
        match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
        if match:  # label_values(SELECTOR, LABEL): the selector is PromQL
            found[f"variable {variable['name']}"] = match.group(1)
    return found


def all_expressions() -> dict[str, str]:
    return {
        **{f"alert {k}": v for k, v in alert_expressions().items()},
        **{f"dashboard {k}": v for k, v in dashboard_expressions().items()},
    }


def with_grafana_variables(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names (in braces or grouping clauses), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS:
            continue
        names.add(name)
    # a selector given only as {__name__="..."} names its metric in a matcher
    names |= set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return names


def vllm_names() -> set[str]:
    """vLLM's names as exposed: counters with _total, histograms as _bucket/_sum/_count (the
    list does not say which is which, so any of these forms counts)."""
    bases = [
        line.strip()
        for line in VLLM_NAMES.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {
        base + suffix for base in bases for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }


def operator_names() -> set[str]:
    """The operator's metric names as exposed, from its registry."""
    from prometheus_client import REGISTRY

    import darwin_operator.metrics  # noqa: F401  (registers the metrics)

    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("darwin_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names
