"""Node drains against the PodDisruptionBudget, through the real Eviction API and the real
disruption controller: every member counts, and a draining group counts as unavailable."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.e2e.checks import apply, endpoint_status, label
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

NAME = "budget"


def evict(cluster, namespace: str, pod: str) -> int:
    """The Eviction API's answer: 201 evicted, 429 refused by the budget."""
    body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=pod, namespace=namespace))
    try:
        k8s.CoreV1Api(cluster.api).create_namespaced_pod_eviction(pod, namespace, body)
    except k8s.ApiException as error:
        return error.status
    return 201


def budget_status(cluster, namespace: str, **expected: int):
    """The PDB's status once it says `expected` (e.g. disruptionsAllowed=1)."""

    def check():
        pdb = cluster.json("get", "pdb", f"{NAME}-members", "-n", namespace)
        status = pdb.get("status") or {}
        if status.get("observedGeneration") != pdb["metadata"]["generation"]:
            return None
        return status if all(status.get(k) == v for k, v in expected.items()) else None

    return check


def all_ready(cluster, namespace: str):
    def check():
        status = endpoint_status(cluster, namespace, NAME)
        return status.get("phase") == "Ready" and status.get("readyReplicas") == 2

    return check


def test_every_member_counts_and_a_draining_group_is_unavailable(cluster, namespace, operator):
    # 2 groups of 3 pods (one per pipeline stage); maxUnavailable 1 group
    manifest = endpoint_manifest(NAME, replicas=2, pods_per_group=3, ready_after="1s")
    apply(cluster, namespace, manifest)
    wait_for(all_ready(cluster, namespace), timeout=120, what="2 groups Ready")
    status = wait_for(
        budget_status(cluster, namespace, expectedPods=6, currentHealthy=6, disruptionsAllowed=1),
        timeout=60,
        what="the budget over all 6 members allowing one eviction",
    )
    assert status["desiredHealthy"] == 5

    # A worker is a member: evicting one spends the budget, so a worker of the other group
    # may not go too (before, only leaders were counted and both evictions went through).
    assert evict(cluster, namespace, f"{NAME}-0-1") == 201
    assert evict(cluster, namespace, f"{NAME}-1-2") == 429

    # the operator recreates group 0; the budget is back once it is Ready
    wait_for(all_ready(cluster, namespace), timeout=120, what="group 0 recreated and Ready")
    wait_for(
        budget_status(cluster, namespace, currentHealthy=6, disruptionsAllowed=1),
        timeout=60,
        what="the budget back to one eviction",
    )

    # A rollout drains a group for a long time: its leader leaves the Service, and the budget
    # counts the group as down although all its pods are Ready.
    cluster.kubectl(
        "patch",
        "dwe",
        NAME,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"engine": {"image": "vllm/vllm-openai:v0.34.0"}, '
        '"rollout": {"drainSeconds": 600}}}',
    )

    def draining_leader():
        leaders = cluster.json("get", "pods", "-n", namespace, "-l", "serving.darwin.ai/rank=0")
        out = [p for p in leaders["items"] if label(p, "serving") == "false"]
        return out[0] if out else None

    draining = wait_for(draining_leader, timeout=60, what="a leader draining")
    other = 1 - int(label(draining, "group"))
    status = wait_for(
        budget_status(cluster, namespace, desiredHealthy=6, disruptionsAllowed=0),
        timeout=60,
        what="the draining group counted as unavailable",
    )
    assert status["currentHealthy"] == 6  # all pods Ready, yet the drain spent the budget
    # the other group's rank 2 (a recreated group's pods carry their incarnation's names)
    (worker,) = [
        p["metadata"]["name"]
        for p in cluster.json("get", "pods", "-n", namespace)["items"]
        if label(p, "group") == str(other) and label(p, "rank") == "2"
    ]
    assert evict(cluster, namespace, worker) == 429  # the other must keep serving
