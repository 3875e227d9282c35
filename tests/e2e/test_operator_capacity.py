"""Gang admission against real scheduling: groups are placed whole or wait whole, gated."""

from __future__ import annotations

import json

import pytest

from tests.e2e.checks import (
    PodRecorder,
    apply,
    bound_gpus,
    condition,
    endpoint_pods,
    endpoint_status,
    event_reasons,
    is_gated,
    is_ready,
    label,
    wait_for_idle_gpus,
)
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e


@pytest.fixture
def idle_cluster(cluster):
    wait_for_idle_gpus(cluster)


def settled(cluster, namespace, name, ready, waiting_index):
    def check():
        status = endpoint_status(cluster, namespace, name)
        groups = {g["index"]: g for g in status.get("groups") or []}
        waiting = groups.get(waiting_index, {})
        if status.get("readyReplicas") == ready and waiting.get("phase") == "WaitingForCapacity":
            return status
        return None

    return check


def test_single_pod_groups_fit_four_and_the_fifth_waits_gated(
    cluster, idle_cluster, namespace, operator
):
    apply(cluster, namespace, endpoint_manifest("big", replicas=5))
    status = wait_for(
        settled(cluster, namespace, "big", 4, 4), timeout=120, what="4 Ready, group 4 waiting"
    )
    waiting = status["groups"][4]
    assert waiting["message"] == (
        "needs 1 pod x 6 nvidia.com/gpu on NVIDIA-B200 nodes; "
        "free: 8 GPUs on 4 eligible nodes (largest 2)"
    )
    assert status["phase"] == "Degraded"
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InsufficientCapacity")
    assert condition(status, "Available")["status"] == "True"
    (fifth,) = [p for p in endpoint_pods(cluster, namespace, "big") if label(p, "group") == "4"]
    assert is_gated(fifth) and not fifth["spec"].get("nodeName")
    assert bound_gpus(cluster) == 24
    wait_for(
        lambda: "WaitingForCapacity" in event_reasons(cluster, namespace, "big"),
        timeout=20,
        what="a WaitingForCapacity event",
    )


def test_pod_per_stage_groups_fit_five_in_thirty_two_gpus(
    cluster, idle_cluster, namespace, operator
):
    apply(cluster, namespace, endpoint_manifest("stages", replicas=6, pods_per_group=3))
    status = wait_for(
        settled(cluster, namespace, "stages", 5, 5), timeout=150, what="5 Ready, group 5 waiting"
    )
    assert status["groups"][5]["message"] == (
        "needs 3 pods x 2 nvidia.com/gpu on NVIDIA-B200 nodes; "
        "free: 2 GPUs on 4 eligible nodes (largest 2)"
    )
    sixth = [p for p in endpoint_pods(cluster, namespace, "stages") if label(p, "group") == "5"]
    assert len(sixth) == 3
    assert all(is_gated(p) and not p["spec"].get("nodeName") for p in sixth)
    assert bound_gpus(cluster) == 30


def filler_pod(name: str) -> dict:
    """Another workload holding a whole node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"},
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/filler:1",
                    "resources": {"limits": {"nvidia.com/gpu": "8"}},
                }
            ],
        },
    }


def test_two_endpoints_competing_for_the_last_gpus_never_both_half_place(
    cluster, idle_cluster, namespace, operator
):
    for i in range(2):
        apply(cluster, namespace, filler_pod(f"filler-{i}"))
    wait_for(lambda: bound_gpus(cluster) == 16, timeout=60, what="fillers bound")
    # 16 GPUs left on 2 nodes: room for four 4-GPU pods, so one group of three, not two
    recorder = PodRecorder(cluster, namespace)
    both = [
        endpoint_manifest(name, replicas=1, tp=4, pp=3, pods_per_group=3)
        for name in ("alpha", "beta")
    ]
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": both}),
    )

    def one_ready_one_waiting():
        phases = sorted(
            (endpoint_status(cluster, namespace, n).get("groups") or [{}])[0].get("phase", "")
            for n in ("alpha", "beta")
        )
        return phases == ["Ready", "WaitingForCapacity"]

    wait_for(one_ready_one_waiting, timeout=120, what="one group Ready, the other waiting")
    history = recorder.stop()

    winner = next(
        n for n in ("alpha", "beta") if endpoint_status(cluster, namespace, n)["readyReplicas"]
    )
    loser = "beta" if winner == "alpha" else "alpha"
    assert all(is_ready(p) for p in endpoint_pods(cluster, namespace, winner))
    losing_pods = endpoint_pods(cluster, namespace, loser)
    assert len(losing_pods) == 3 and all(is_gated(p) for p in losing_pods)
    # at no moment was any pod of the losing group released or bound: no GPU held half placed
    losing_events = [e for e in history if label(e["object"], "endpoint") == loser]
    # the record holds the losing group's pods (each added), so the check below saw them
    added = {e["object"]["metadata"]["name"] for e in losing_events if e["type"] == "ADDED"}
    assert added == {p["metadata"]["name"] for p in losing_pods}, added
    for event in losing_events:
        pod = event["object"]
        assert is_gated(pod) and not pod["spec"].get("nodeName"), pod["metadata"]["name"]
    assert bound_gpus(cluster) == 16 + 12

    # the other workload leaves: the waiting group is admitted without any nudge
    cluster.kubectl("delete", "pod", "filler-0", "filler-1", "-n", namespace, "--wait=false")
    wait_for(
        lambda: endpoint_status(cluster, namespace, loser).get("readyReplicas") == 1,
        timeout=90,
        what=f"{loser} admitted once the GPUs are free",
    )
