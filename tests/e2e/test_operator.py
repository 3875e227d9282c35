"""The operator as users run it, against the local control plane: groups, gang admission,
status, the Services, scaling and deletion."""

from __future__ import annotations

import pytest

from tests.e2e.checks import (
    PodRecorder,
    apply,
    condition,
    endpoint_pods,
    endpoint_ready,
    endpoint_status,
    event_reasons,
    gpus_of,
    is_gated,
    is_ready,
    label,
)
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e


def slice_addresses(cluster, namespace, service):
    """(pod name, ready) for every endpoint in the Service's EndpointSlices."""
    slices = cluster.json(
        "get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}"
    )["items"]
    return sorted(
        (e["targetRef"]["name"], bool((e.get("conditions") or {}).get("ready")))
        for s in slices
        for e in s.get("endpoints") or []
    )


def test_reference_endpoint_is_gated_then_admitted_and_becomes_ready(cluster, namespace, operator):
    recorder = PodRecorder(cluster, namespace)
    apply(cluster, namespace, endpoint_manifest("darwin-398b", replicas=2))
    status = wait_for(
        endpoint_ready(cluster, namespace, "darwin-398b", 2), timeout=90, what="endpoint Ready 2/2"
    )
    first_seen = recorder.first_versions()

    assert sorted(first_seen) == ["darwin-398b-0-0", "darwin-398b-1-0"]
    assert all(is_gated(p) for p in first_seen.values()), "pods must be created gated"
    pods = endpoint_pods(cluster, namespace, "darwin-398b")
    assert len(pods) == 2
    nodes = set()
    for pod in pods:
        assert not is_gated(pod) and is_ready(pod)
        assert pod["metadata"]["annotations"]["serving.darwin.ai/admittedAt"]
        assert gpus_of(pod) == 6
        node = cluster.json("get", "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-B200"
        nodes.add(pod["spec"]["nodeName"])
        owner = pod["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == (
            "DarwinEndpoint",
            "darwin-398b",
            True,
        )
    assert len(nodes) == 2  # 6 of 8 GPUs each: one group per node

    assert status["replicas"] == status["availableReplicas"] == status["updatedReplicas"] == 2
    assert status["endpoint"] == f"http://darwin-398b.{namespace}.svc:8000/v1"
    assert status["selector"] == (
        "serving.darwin.ai/endpoint=darwin-398b,serving.darwin.ai/role=leader"
    )
    assert status["observedGeneration"] == 1
    assert condition(status, "Available")["status"] == "True"
    assert condition(status, "Progressing")["status"] == "False"
    assert condition(status, "Degraded")["status"] == "False"
    assert [(g["index"], g["phase"], g["podsReady"]) for g in status["groups"]] == [
        (0, "Ready", 1),
        (1, "Ready", 1),
    ]
    wait_for(
        lambda: (
            slice_addresses(cluster, namespace, "darwin-398b")
            == [("darwin-398b-0-0", True), ("darwin-398b-1-0", True)]
        ),
        timeout=30,
        what="both leaders ready in the client Service's EndpointSlice",
    )
    services = cluster.json("get", "services", "-n", namespace)["items"]
    assert sorted(s["metadata"]["name"] for s in services) == ["darwin-398b", "darwin-398b-pods"]
    cluster.kubectl("get", "pdb", "darwin-398b-members", "-n", namespace)
    metrics = operator.metrics()
    series = f'endpoint="darwin-398b",namespace="{namespace}",state="ready"'
    assert f"darwin_endpoint_replicas{{{series}}} 2.0" in metrics
    assert f"darwin_gpus{{{series}}} 12.0" in metrics
    assert 'darwin_reconcile_total{result="success"}' in metrics
    reasons = event_reasons(cluster, namespace, "darwin-398b")
    for reason in ("GroupCreated", "GroupAdmitted", "GroupReady", "EndpointReady"):
        assert reason in reasons
    # the scale subresource and the printer columns work with the status the operator writes
    scale = cluster.json(
        "get", "--subresource=scale", "darwinendpoint", "darwin-398b", "-n", namespace
    )
    assert scale["status"]["replicas"] == 2


def test_one_pod_per_stage_gets_ranks_leader_address_and_only_the_leader_serves(
    cluster, namespace, operator
):
    recorder = PodRecorder(cluster, namespace)
    apply(
        cluster,
        namespace,
        endpoint_manifest("stages", replicas=1, pods_per_group=3, ready_after="3s"),
    )
    wait_for(endpoint_ready(cluster, namespace, "stages", 1), timeout=90, what="Ready 1/1")
    first_seen = recorder.first_versions()
    assert all(is_gated(p) for p in first_seen.values())

    pods = sorted(endpoint_pods(cluster, namespace, "stages"), key=lambda p: label(p, "rank"))
    assert [p["metadata"]["name"] for p in pods] == ["stages-0-0", "stages-0-1", "stages-0-2"]
    assert [label(p, "rank") for p in pods] == ["0", "1", "2"]
    assert [label(p, "role") for p in pods] == ["leader", "worker", "worker"]
    assert all(gpus_of(p) == 2 for p in pods)
    # gates were lifted for the whole group at once
    admitted = {p["metadata"]["annotations"]["serving.darwin.ai/admittedAt"] for p in pods}
    assert len(admitted) == 1
    leader = f"stages-0-0.stages-pods.{namespace}.svc"
    for rank, pod in enumerate(pods):
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        assert env["DARWIN_NODE_RANK"] == str(rank)
        assert env["DARWIN_GROUP_INDEX"] == "0"
        assert env["DARWIN_GROUP_SIZE"] == "3"
        assert env["DARWIN_LEADER_ADDRESS"] == leader
        command = " ".join(container["command"] + container.get("args", []))
        assert "--nnodes 3" in command and f"--node-rank {rank}" in command
        assert f"--master-addr {leader}" in command
        assert ("--headless" in command) == (rank > 0)
    wait_for(
        lambda: slice_addresses(cluster, namespace, "stages") == [("stages-0-0", True)],
        timeout=30,
        what="only the leader in the client Service",
    )


def test_scale_up_down_to_zero_and_back_then_delete_removes_everything(
    cluster, namespace, operator
):
    name = "scaled"
    apply(cluster, namespace, endpoint_manifest(name, replicas=2, tp=2, pp=1, drain_seconds=3))
    wait_for(endpoint_ready(cluster, namespace, name, 2), timeout=90, what="Ready 2/2")

    def scale(n: int) -> None:
        cluster.kubectl("scale", "dwe", name, "-n", namespace, f"--replicas={n}")

    def groups() -> list[int]:
        return sorted({int(label(p, "group")) for p in endpoint_pods(cluster, namespace, name)})

    scale(4)
    wait_for(endpoint_ready(cluster, namespace, name, 4), timeout=90, what="Ready 4/4")
    assert groups() == [0, 1, 2, 3]

    scale(1)
    # the highest groups leave the Service first, and stay for drainSeconds
    drained = wait_for(
        lambda: sorted(
            p["metadata"]["name"]
            for p in endpoint_pods(cluster, namespace, name)
            if label(p, "serving") == "false"
        ),
        timeout=30,
        what="leaders of the removed groups out of the Service",
    )
    assert set(drained) <= {"scaled-1-0", "scaled-2-0", "scaled-3-0"}
    status = endpoint_status(cluster, namespace, name)
    assert {g["phase"] for g in status["groups"] if g["index"] > 0} <= {"Draining", "Ready"}
    wait_for(endpoint_ready(cluster, namespace, name, 1), timeout=60, what="Ready 1/1")
    assert groups() == [0]
    assert "GroupDraining" in event_reasons(cluster, namespace, name)

    scale(0)
    wait_for(lambda: groups() == [], timeout=60, what="no group left")
    status = wait_for(endpoint_ready(cluster, namespace, name, 0), timeout=30, what="Ready 0/0")
    assert status["replicas"] == 0

    scale(2)
    wait_for(endpoint_ready(cluster, namespace, name, 2), timeout=90, what="Ready 2/2 again")
    assert groups() == [0, 1]

    cluster.kubectl("delete", "dwe", name, "-n", namespace, "--wait=true")
    wait_for(
        lambda: (
            not endpoint_pods(cluster, namespace, name)
            and not cluster.json("get", "services", "-n", namespace)["items"]
            and not cluster.json("get", "pdb", "-n", namespace)["items"]
        ),
        timeout=60,
        what="pods, Services and PDB garbage-collected",
    )
