"""A write the API server refuses (here Pod Security "baseline" refusing a hostPath volume) is
reported on the endpoint with the server's own words, retried with backoff, and cleared once the
write goes through; other endpoints are served meanwhile."""

from __future__ import annotations

import pytest

from tests.e2e.checks import apply, condition, endpoint_pods, endpoint_status, events
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

REFUSAL = 'violates PodSecurity "baseline:latest": hostPath volumes (volume "weights")'


def test_pod_refused_by_pod_security_degrades_with_the_servers_reason_until_allowed(
    cluster, namespace, operator
):
    model = {"name": "org/model", "cache": {"hostPath": "/var/lib/darwin/weights"}}
    apply(cluster, namespace, endpoint_manifest("hostpath", replicas=1, tp=2, pp=1, model=model))
    apply(cluster, namespace, endpoint_manifest("fine", replicas=1, tp=2, pp=1))

    def rejected():
        status = endpoint_status(cluster, namespace, "hostpath")
        c = condition(status, "Degraded")
        return status if c.get("status") == "True" and c.get("reason") == "WriteRejected" else None

    status = wait_for(rejected, timeout=60, what="Degraded WriteRejected on hostpath")
    assert REFUSAL in condition(status, "Degraded")["message"]
    assert status["phase"] == "Degraded"
    assert endpoint_pods(cluster, namespace, "hostpath") == []
    warning = wait_for(
        lambda: next(
            (
                e
                for e in events(cluster, namespace, "hostpath")
                if e["reason"] == "WriteRejected" and e["type"] == "Warning"
            ),
            None,
        ),
        timeout=30,
        what="a WriteRejected Warning event on hostpath",
    )
    assert REFUSAL in warning["message"]

    # the other endpoint is served meanwhile
    wait_for(
        lambda: endpoint_status(cluster, namespace, "fine").get("phase") == "Ready",
        timeout=90,
        what="the other endpoint Ready",
    )
    # retried with the worker's error backoff (1s, 2s, 5s, ...), not in a tight loop
    wait_for(
        lambda: "retry in 5s" in operator.log(tail=100_000),
        timeout=60,
        what="the third retry of the refused write",
    )
    retries = [
        line.split("retry in ")[1].split("s")[0]
        for line in operator.log(tail=100_000).splitlines()
        if "hostpath" in line and "retry in " in line
    ]
    assert retries[:3] == ["1", "2", "5"], retries
    assert len(events_of(cluster, namespace, "hostpath", "WriteRejected")) == 1

    # once the namespace allows hostPath, the next retry creates the pods and clears the condition
    cluster.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=privileged",
        "--overwrite",
    )
    wait_for(
        lambda: endpoint_status(cluster, namespace, "hostpath").get("phase") == "Ready",
        timeout=90,  # the longest backoff step (30s) plus a start
        what="hostpath Ready once its pods are allowed",
    )
    assert condition(endpoint_status(cluster, namespace, "hostpath"), "Degraded")["status"] == (
        "False"
    )
    assert operator.healthy()


def events_of(cluster, namespace: str, name: str, reason: str) -> list[dict]:
    return [e for e in events(cluster, namespace, name) if e["reason"] == reason]
