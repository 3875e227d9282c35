"""The operator's metrics through a real Prometheus: it scrapes the operator process while an
endpoint becomes Ready, loses a member, has a pod crash and starts a rollout; then the queries a
user would run return what happened, every alert and dashboard query runs without error, and
a deleted endpoint's series go."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests import promql
from tests.e2e.checks import apply, endpoint_pods, endpoint_ready, endpoint_status, is_ready, label
from tests.e2e.prometheus import Prometheus
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

NAME = "observed"


@pytest.fixture
def prometheus(operator, tmp_path: Path):
    server = Prometheus(
        tmp_path / "prometheus",
        targets=[f"127.0.0.1:{operator.metrics_port}"],
        rule_files=[promql.RULES],
    ).start()
    yield server
    server.stop()


def test_prometheus_sees_readiness_recreations_crashes_and_rollouts(
    cluster, namespace, operator, prometheus
):
    ep = f'namespace="{namespace}", endpoint="{NAME}"'

    def seen(expr: str, expected: float, what: str, timeout: float = 60) -> None:
        wait_for(
            lambda: prometheus.value(expr) == expected,
            timeout=timeout,
            what=f"Prometheus: {what} ({expr} == {expected}; last {prometheus.value(expr)})",
        )

    # 1. Ready: 2 groups of 2 pods x 1 GPU, gated, admitted, bound, Ready.
    manifest = endpoint_manifest(NAME, replicas=2, tp=1, pp=2, pods_per_group=2)
    apply(cluster, namespace, manifest)
    wait_for(endpoint_ready(cluster, namespace, NAME, 2), timeout=90, what="the endpoint Ready")
    seen(f'max(darwin_endpoint_replicas{{{ep}, state="ready"}})', 2, "2 ready groups")
    seen(f'max(darwin_endpoint_phase{{{ep}, phase="Ready"}})', 1, "endpoint phase Ready")
    seen(f'max(darwin_gpus{{{ep}, state="ready"}})', 4, "4 GPUs in Ready groups")
    seen(f'max(darwin_gpus{{{ep}, state="requested"}})', 4, "4 GPUs requested")
    seen(f'sum(darwin_group_phase{{{ep}, phase="Ready"}})', 2, "2 groups in phase Ready")
    # No WaitingForCapacity: a group that fits is admitted in the reconcile that creates it.
    for phase in ("Scheduling", "Starting", "Total"):
        seen(
            f'sum(darwin_group_startup_seconds_count{{{ep}, phase="{phase}"}})',
            2,
            f"startup phase {phase} observed once per group",
        )
    # the pods become Ready 2s (ready-after) after they start: Starting took about that long
    starting = prometheus.value(
        f'sum(darwin_group_startup_seconds_sum{{{ep}, phase="Starting"}})'
        f' / sum(darwin_group_startup_seconds_count{{{ep}, phase="Starting"}})'
    )
    assert starting is not None and 1 <= starting <= 30, starting

    # 2. A member deleted: group 1's worker goes, the group is recreated as a whole.
    worker = next(
        p["metadata"]["name"]
        for p in endpoint_pods(cluster, namespace, NAME)
        if label(p, "group") == "1" and label(p, "rank") == "1"
    )
    cluster.kubectl("delete", "pod", "-n", namespace, worker, "--wait=false")
    seen(
        f'max(darwin_group_recreations_total{{{ep}, reason="MemberDeleted"}})',
        1,
        "one recreation, reason MemberDeleted",
    )
    wait_for(
        endpoint_ready(cluster, namespace, NAME, 2), timeout=90, what="the endpoint Ready again"
    )
    seen(f'sum(darwin_group_phase{{{ep}, phase="Ready"}})', 2, "both groups Ready again")

    # 3. A crash: group 0's leader's container crashes once; the group leaves Ready
    # (Prometheus sees one ready replica group fewer) and is recreated.
    leader = next(
        p["metadata"]["name"]
        for p in endpoint_pods(cluster, namespace, NAME)
        if label(p, "group") == "0" and label(p, "rank") == "0" and is_ready(p)
    )
    crashed_at = time.monotonic()
    cluster.kubectl("annotate", "pod", "-n", namespace, leader, "darwin.test/inject=crash")

    def ready_since_crash() -> float | None:
        window = int(time.monotonic() - crashed_at) + 1  # seconds since the crash
        expr = f'min(min_over_time(darwin_endpoint_replicas{{{ep}, state="ready"}}[{window}s]))'
        return prometheus.value(expr)

    wait_for(
        lambda: ready_since_crash() == 1,
        timeout=60,
        what="Prometheus: the crashed group counted out of the ready replicas",
    )
    seen(
        f'max(darwin_group_recreations_total{{{ep}, reason="ContainerRestarted"}})',
        1,
        "one recreation, reason ContainerRestarted",
    )
    wait_for(
        endpoint_ready(cluster, namespace, NAME, 2), timeout=90, what="the endpoint Ready again"
    )
    seen(f"sum(darwin_group_recreations_total{{{ep}}})", 2, "two recreations in all")

    # 4. A rollout: a new image is a new revision; Prometheus sees it in progress, then done.
    manifest["spec"]["engine"]["image"] = "vllm/vllm-openai:v0.33.0-rebuilt"
    apply(cluster, namespace, manifest)
    seen(f"max(darwin_rollout_in_progress{{{ep}}})", 1, "the rollout in progress")
    wait_for(
        lambda: (
            endpoint_ready(cluster, namespace, NAME, 2)()
            and endpoint_status(cluster, namespace, NAME).get("updatedReplicas") == 2
        ),
        timeout=120,
        what="the rollout done",
    )
    seen(f"max(darwin_rollout_in_progress{{{ep}}})", 0, "the rollout no longer in progress")
    seen(f'max(darwin_endpoint_replicas{{{ep}, state="updated"}})', 2, "2 groups updated")

    # 5. Every alert and dashboard query runs without error, on real data.
    failures = {}
    for where, expr in promql.all_expressions().items():
        answer = prometheus.query(promql.with_grafana_variables(expr))
        if answer.get("status") != "success":
            failures[where] = answer
    assert not failures, json.dumps(failures, indent=1)
    rules = prometheus.api("rules")["data"]["groups"]
    evaluated = {r["name"]: r for g in rules for r in g["rules"]}
    assert set(evaluated) == set(promql.alert_expressions())
    unhealthy = {n: r.get("lastError") for n, r in evaluated.items() if r["health"] == "err"}
    assert not unhealthy, unhealthy

    # 6. The endpoint deleted: its series leave the operator's /metrics.
    cluster.kubectl("delete", "darwinendpoint", NAME, "-n", namespace)
    wait_for(
        lambda: f'endpoint="{NAME}"' not in operator.metrics(),
        timeout=30,
        what="the deleted endpoint's series gone from /metrics",
    )
