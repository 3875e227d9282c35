"""The Grafana dashboard, and the metric names the chart's PromQL uses (the queries themselves
run against a real Prometheus in tests/e2e/test_metrics_prometheus.py)."""

from __future__ import annotations

import pytest

from tests import promql


def test_the_dashboard_covers_the_operator_and_vllm():
    dashboard = promql.dashboard()
    assert dashboard["uid"] == "darwin-operator"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    text = " ".join(promql.dashboard_expressions().values())
    wanted = [
        "darwin_endpoint_phase",
        "darwin_group_phase",
        "darwin_group_recreations_total",
        "darwin_group_startup_seconds_bucket",
        "darwin_rollout_in_progress",
        "darwin_rollout_duration_seconds_bucket",
        "darwin_gpus",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:generation_tokens_total",
        "vllm:kv_cache_usage_perc",
    ]
    assert [name for name in wanted if name not in text] == []


@pytest.mark.parametrize("where, expr", promql.all_expressions().items())
def test_every_expression_names_only_metrics_that_exist(where, expr):
    names = promql.metric_names(expr)
    assert names, f"{where}: no metric found in {expr}"
    unknown = names - promql.operator_names() - promql.vllm_names()
    assert not unknown, f"{where}: no such metric {sorted(unknown)}"


@pytest.mark.parametrize(
    "expr, names",
    [
        ('max by (namespace, endpoint) (darwin_gpus{state="ready"}) == 1', {"darwin_gpus"}),
        (
            "histogram_quantile(0.9, sum by (le) "
            "(rate(vllm:e2e_request_latency_seconds_bucket[5m]))) > 0",
            {"vllm:e2e_request_latency_seconds_bucket"},
        ),
        ("a unless on (x, y) b > 0 and ignoring (z) c", {"a", "b", "c"}),
        ('{__name__="darwin_gpus", state="ready"}', {"darwin_gpus"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr, names):
    assert promql.metric_names(expr) == names


def test_a_misspelt_metric_is_caught():
    assert "darwin_gpu" not in promql.operator_names() | promql.vllm_names()
    assert promql.metric_names("sum(rate(vllm:generation_tokens[1m]))") == {
        "vllm:generation_tokens"
    }
