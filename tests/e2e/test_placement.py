"""Admission's placement is the scheduler's: the pods of an admitted group are held to the
nodes admission counted them on, packed so that whole nodes stay free."""

from __future__ import annotations

import pytest

from tests.e2e.checks import apply, endpoint_pods, endpoint_status, is_gated
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e


def held_to(pod: dict) -> list[str]:
    affinity = pod["spec"]["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (field,) = term["matchFields"]
    assert (field["key"], field["operator"]) == ("metadata.name", "In")
    return field["values"]


def test_an_admitted_group_is_held_to_the_nodes_admission_chose(cluster, namespace, operator):
    # two groups of 3 pods x 2 GPUs on empty 8-GPU nodes; left to itself the scheduler spreads
    # 2-GPU pods over the emptiest nodes
    manifest = endpoint_manifest("packed", replicas=2, pods_per_group=3, ready_after="1s")
    apply(cluster, namespace, manifest)

    def ready():
        status = endpoint_status(cluster, namespace, "packed")
        return status.get("phase") == "Ready" and status.get("readyReplicas") == 2

    wait_for(ready, timeout=120, what="2 groups Ready")
    pods = endpoint_pods(cluster, namespace, "packed")
    assert len(pods) == 6
    for pod in pods:
        assert held_to(pod) == [pod["spec"]["nodeName"]], pod["metadata"]["name"]
    # best fit: the first group fills one node (6 of 8 GPUs), the second takes that node's last
    # two GPUs and one more node; the other nodes stay whole
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 2


def test_a_group_short_of_memory_waits_gated_with_a_message(cluster, namespace, operator):
    # the GPUs are free, but no node has 3Ti of memory (they have 2Ti): admitted, the pods
    # would sit unschedulable until the scheduling timeout and be recreated, again and again
    manifest = endpoint_manifest("hungry", replicas=1, ready_after="1s")
    manifest["spec"]["resources"] = {"cpu": "32", "memory": "3Ti"}
    apply(cluster, namespace, manifest)

    def held():
        groups = endpoint_status(cluster, namespace, "hungry").get("groups") or []
        return groups and "short of memory" in groups[0].get("message", "") and groups[0]

    group = wait_for(held, timeout=60, what="the group held for memory, with a message")
    assert group["phase"] == "WaitingForCapacity"
    assert "each pod requests 3072Gi, at most 2048Gi free" in group["message"]
    assert all(is_gated(p) for p in endpoint_pods(cluster, namespace, "hungry"))
