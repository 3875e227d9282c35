"""The operator keeps no state of its own: killed at any moment it carries on from the cluster;
bad input it cannot act on is reported, and other endpoints are served meanwhile."""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s

from tests.e2e.checks import (
    apply,
    condition,
    endpoint_pods,
    endpoint_status,
    events,
    is_gated,
    label,
    wait_for_idle_gpus,
)
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e


def test_killed_while_creating_groups_it_converges_with_no_duplicate_or_orphan(
    cluster, crd_installed, namespace, tmp_path
):
    wait_for_idle_gpus(cluster)  # 10 groups of 3 GPUs need 30 of the 32
    process = OperatorProcess(
        cluster.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)
    )
    process.start()
    core = k8s.CoreV1Api(cluster.api)
    apply(
        cluster,
        namespace,
        endpoint_manifest("crashy", replicas=10, tp=1, pp=3, pods_per_group=3, ready_after="2s"),
    )
    # SIGKILL as soon as the first pods appear: mid-way through creating the groups
    deadline = time.monotonic() + 60
    while not core.list_namespaced_pod(namespace).items:
        assert time.monotonic() < deadline, process.log()
        time.sleep(0.01)
    process.kill()
    before = {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(namespace).items}
    assert len(before) > 0, "the operator was killed before it created anything"

    process.start()
    try:
        wait_for(
            lambda: endpoint_status(cluster, namespace, "crashy").get("readyReplicas") == 10,
            timeout=150,
            what="10 groups Ready after the restart",
        )
        # killed once more in the middle of a scale-down, it still finishes it
        cluster.kubectl("scale", "dwe", "crashy", "-n", namespace, "--replicas=7")
        wait_for(
            lambda: any(
                label(p, "serving") == "false" for p in endpoint_pods(cluster, namespace, "crashy")
            ),
            timeout=30,
            what="draining started",
        )
        process.kill()
        process.start()
        wait_for(
            lambda: (
                endpoint_status(cluster, namespace, "crashy").get("phase") == "Ready"
                and endpoint_status(cluster, namespace, "crashy").get("replicas") == 7
            ),
            timeout=90,
            what="scaled down to 7 after the second restart",
        )
    finally:
        code = process.stop()
    assert code == 0

    # no orphan, no duplicate once the deletions it made have finished (the groups scaled away
    # and an incarnation replaced after the kill may still be terminating when status says 7)
    expected = [(g, r) for g in range(7) for r in range(3)]

    def settled():
        pods = endpoint_pods(cluster, namespace, "crashy")
        layout = sorted((int(label(p, "group")), int(label(p, "rank"))) for p in pods)
        return pods if layout == expected else None

    pods = wait_for(settled, timeout=60, what="exactly groups 0-6, ranks 0-2")
    uid = "".join(
        endpoint_status
        and [cluster.json("get", "dwe", "crashy", "-n", namespace)["metadata"]["uid"]]
    )
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == uid for p in pods)
    # pods created before the kill were kept, not recreated
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    for name, pod_uid in before.items():
        if name in now:
            assert now[name] == pod_uid, f"{name} was recreated"
    assert sum(1 for name in before if name in now) >= 1


def test_missing_secret_and_unmatched_selector_are_reported_while_others_are_served(
    cluster, namespace, operator
):
    apply(
        cluster,
        namespace,
        endpoint_manifest(
            "nosecret",
            replicas=1,
            tp=2,
            pp=1,
            model={"name": "org/model", "tokenSecretRef": {"name": "hf-token"}},
        ),
    )
    apply(
        cluster,
        namespace,
        endpoint_manifest(
            "nowhere",
            replicas=1,
            tp=2,
            pp=1,
            placement={"nodeSelector": {"darwin.test/rack": "rack-99"}},
        ),
    )
    apply(cluster, namespace, endpoint_manifest("fine", replicas=1, tp=2, pp=1))

    def degraded(name, reason):
        def check():
            status = endpoint_status(cluster, namespace, name)
            c = condition(status, "Degraded")
            return status if c.get("status") == "True" and c.get("reason") == reason else None

        return check

    wait_for(
        lambda: endpoint_status(cluster, namespace, "fine").get("phase") == "Ready",
        timeout=90,
        what="the healthy endpoint Ready",
    )
    status = wait_for(degraded("nosecret", "SecretNotFound"), timeout=60, what="SecretNotFound")
    assert (
        "Secret hf-token (spec.model.tokenSecretRef) not found"
        in condition(status, "Degraded")["message"]
    )
    assert all(is_gated(p) for p in endpoint_pods(cluster, namespace, "nosecret"))

    status = wait_for(degraded("nowhere", "NoEligibleNodes"), timeout=60, what="NoEligibleNodes")
    message = status["groups"][0]["message"]
    assert "matching darwin.test/rack=rack-99" in message
    assert "no eligible nodes (4 nodes: 4 labels do not match)" in message
    assert status["phase"] == "Degraded"

    for name, reason in (("nosecret", "SecretNotFound"), ("nowhere", "NoEligibleNodes")):
        wait_for(
            lambda name=name, reason=reason: any(
                e["reason"] == reason and e["type"] == "Warning"
                for e in events(cluster, namespace, name)
            ),
            timeout=30,
            what=f"a {reason} event on {name}",
        )

    # once the Secret exists, the endpoint proceeds on its own (pods need not be touched)
    cluster.kubectl(
        "create", "secret", "generic", "hf-token", "-n", namespace, "--from-literal=token=x"
    )
    wait_for(
        lambda: endpoint_status(cluster, namespace, "nosecret").get("phase") == "Ready",
        timeout=60,
        what="endpoint Ready once its Secret exists",
    )
    assert operator.healthy()


def test_admitted_group_that_cannot_be_scheduled_is_torn_down_and_gated_again(
    cluster, crd_installed, namespace, tmp_path
):
    # The GPUs fit, but no node has the extra device the pods ask for. Admission counts GPUs,
    # CPU, memory, ephemeral storage and pods, not devices a node does not report, so it admits
    # the group and the scheduler leaves the pods Unschedulable, as it would if another workload
    # had taken the room after admission.
    process = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        namespaces=(namespace,),
        scheduling_timeout=4,
    ).start()
    try:
        manifest = endpoint_manifest("greedy", replicas=1, tp=1, pp=2, pods_per_group=2)
        manifest["spec"]["resources"] = {"extra": {"example.com/nic": "1"}}
        apply(cluster, namespace, manifest)
        first = wait_for(
            lambda: {
                p["metadata"]["name"]: p["metadata"]["uid"]
                for p in endpoint_pods(cluster, namespace, "greedy")
                if not is_gated(p)
            },
            timeout=60,
            what="the group admitted",
        )
        assert len(first) == 2  # both pods released together
        timeout_event = wait_for(
            lambda: next(
                (
                    e
                    for e in events(cluster, namespace, "greedy")
                    if e["reason"] == "SchedulingTimeout"
                ),
                None,
            ),
            timeout=60,
            what="a SchedulingTimeout event",
        )
        assert timeout_event["type"] == "Warning"
        assert "not scheduled within 4s" in timeout_event["message"]
        assert "Insufficient example.com/nic" in timeout_event["message"]
        # recreated whole: new pods under the same names
        wait_for(
            lambda: (
                {
                    p["metadata"]["name"]
                    for p in endpoint_pods(cluster, namespace, "greedy")
                    if p["metadata"]["uid"] not in first.values()
                }
                == set(first)
            ),
            timeout=60,
            what="the group recreated",
        )
        assert all(
            not p["spec"].get("nodeName") for p in endpoint_pods(cluster, namespace, "greedy")
        )
    finally:
        assert process.stop() == 0
