"""Weights staged on the nodes (model.cache.staging: PerNode) on kwok nodes, with staging pods that
take a modelled time (`darwin.test/staged-after`) and fail on demand (`darwin.test/staging-exit`):
groups go only where the weights are, an operator killed mid-download neither downloads again
nor loses the record, a recreated group returns to its warm node, a rollout stages before it
replaces, and bad input is a condition and an Event naming the cause."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from darwin_operator import staging
from tests.e2e.checks import (
    apply,
    condition,
    endpoint_pods,
    endpoint_status,
    event_reasons,
    events,
    is_deleting,
    is_gated,
    pods,
    wait_for_idle_gpus,
)
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

STAGING = "serving.darwin.ai/role=staging"


def node_local_volume(cluster, namespace: str) -> str:
    """A local PersistentVolume over the B200 nodes and a claim bound to it (what an admin
    creates once per namespace); returns the PersistentVolume's name."""
    name = f"models-{namespace}"[:63]
    core = k8s.CoreV1Api(cluster.api)
    term = {
        "matchExpressions": [
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-B200"]}
        ]
    }
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "3Ti"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "local": {"path": "/mnt/nvme/models"},
                "claimRef": {"namespace": namespace, "name": "models"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [term]}},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": name,
                "resources": {"requests": {"storage": "3Ti"}},
            },
        },
    )
    return name


def staged_manifest(name: str, staged_after: str, **changes) -> dict:
    manifest = endpoint_manifest(name, replicas=2, ready_after="1s", **changes)
    manifest["spec"]["model"]["revision"] = "v1"
    manifest["spec"]["model"]["cache"] = {"persistentVolumeClaim": "models", "staging": "PerNode"}
    manifest["spec"]["podMetadata"]["annotations"]["darwin.test/staged-after"] = staged_after
    return manifest


def group_leader(pod: dict, index: int) -> bool:
    labels = pod["metadata"]["labels"]
    return (
        labels.get("serving.darwin.ai/group") == str(index)
        and labels.get("serving.darwin.ai/role") == "leader"
    )


def node_of(pod: dict) -> str:
    return pod["metadata"]["annotations"]["serving.darwin.ai/node"]


def staging_pods(cluster, namespace: str, revision: str) -> list[dict]:
    return [
        p
        for p in pods(cluster, namespace, STAGING)
        if p["metadata"]["annotations"]["serving.darwin.ai/modelRevision"] == revision
    ]


def weights_failure(cluster, namespace: str, name: str, reason: str) -> dict:
    """The endpoint's WeightsReady condition once it reports `reason`; a StagingFailed Event
    was sent with it."""

    def reported():
        c = condition(endpoint_status(cluster, namespace, name), "WeightsReady")
        return c.get("reason") == reason and c

    c = wait_for(reported, timeout=60, what=f"WeightsReady=False {reason}")
    assert "StagingFailed" in event_reasons(cluster, namespace, name)
    return c


def test_groups_go_where_the_weights_are_and_survive_a_kill_a_recreation_and_a_rollout(
    cluster, crd_installed, namespace, tmp_path
):
    wait_for_idle_gpus(cluster)
    volume = node_local_volume(cluster, namespace)
    process = OperatorProcess(
        cluster.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)
    ).start()
    core = k8s.CoreV1Api(cluster.api)
    try:
        apply(cluster, namespace, staged_manifest("local", staged_after="20s"))
        nodes = sorted(n["metadata"]["name"] for n in cluster.json("get", "nodes")["items"])

        def downloading():
            found = staging_pods(cluster, namespace, "v1")
            running = [p for p in found if p["status"].get("phase") == "Running"]
            return len(running) == len(nodes) and found

        first = wait_for(downloading, timeout=60, what="one staging pod per node, running")
        assert sorted(node_of(p) for p in first) == nodes
        # no group starts before its node holds the weights
        status = endpoint_status(cluster, namespace, "local")
        assert {g["phase"] for g in status.get("groups") or []} <= {"Downloading", "Pending"}
        assert all(is_gated(p) for p in endpoint_pods(cluster, namespace, "local"))

        # one node's path cannot be written
        bad = first[-1]
        code = staging.FAILURE_BY_REASON["WeightsVolumeNotWritable"].exit_code
        cluster.kubectl(
            "annotate",
            "pod",
            bad["metadata"]["name"],
            "-n",
            namespace,
            f"darwin.test/staging-exit={code}",
            "darwin.test/staging-message=cannot write /models: Permission denied",
        )
        # the operator killed during the download: the record stays, nothing downloads again
        process.kill()
        process.start()

        def ready():
            s = endpoint_status(cluster, namespace, "local")
            return s.get("readyReplicas") == 2 and s

        status = wait_for(ready, timeout=120, what="2 groups Ready on staged nodes")
        good = {p["metadata"]["uid"] for p in first if p is not bad}
        now = staging_pods(cluster, namespace, "v1")
        assert good <= {p["metadata"]["uid"] for p in now}, "a staging pod was made again"
        staged = {node_of(p) for p in now if p["status"].get("phase") == "Succeeded"}
        assert node_of(bad) not in staged
        serving = endpoint_pods(cluster, namespace, "local")
        assert {p["spec"]["nodeName"] for p in serving} <= staged
        weights = condition(status, "WeightsReady")
        assert weights["status"] == "False"
        assert weights["reason"] == "WeightsVolumeNotWritable"
        assert node_of(bad) in weights["message"]
        assert "StagingFailed" in event_reasons(cluster, namespace, "local")
        failed = [e for e in events(cluster, namespace, "local") if e["reason"] == "StagingFailed"]
        assert "Permission denied" in failed[0]["message"]
        assert {w["state"] for w in status["weights"]} == {"Staged", "Failed"}

        # a recreated group goes back to its warm node
        leader = next(p for p in serving if group_leader(p, 0))
        home = leader["spec"]["nodeName"]
        core.delete_namespaced_pod(leader["metadata"]["name"], namespace)

        def back():
            s = endpoint_status(cluster, namespace, "local")
            group = next(g for g in s.get("groups") or [] if g["index"] == 0)
            if group.get("restarts", 0) < 1 or s.get("readyReplicas") != 2:
                return None
            live = endpoint_pods(cluster, namespace, "local")
            return next((p for p in live if group_leader(p, 0) and not is_deleting(p)), None)

        again = wait_for(back, timeout=120, what="group 0 recreated and Ready")
        assert again["metadata"]["uid"] != leader["metadata"]["uid"]
        assert again["spec"]["nodeName"] == home

        # a rollout to a new revision stages first: no group is drained while it downloads
        manifest = staged_manifest("local", staged_after="15s")
        manifest["spec"]["model"]["revision"] = "v2"
        apply(cluster, namespace, manifest)
        wait_for(
            lambda: len(staging_pods(cluster, namespace, "v2")) == len(nodes),
            timeout=60,
            what="v2 staging pods on every node",
        )
        during = endpoint_pods(cluster, namespace, "local")
        assert all(
            p["metadata"]["labels"].get("serving.darwin.ai/serving") == "true"
            for p in during
            if p["metadata"]["labels"].get("serving.darwin.ai/role") == "leader"
        )
        old_revision = during[0]["metadata"]["labels"]["serving.darwin.ai/revision"]

        def rolled():
            s = endpoint_status(cluster, namespace, "local")
            live = endpoint_pods(cluster, namespace, "local")
            done = s.get("updatedReplicas") == 2 and s.get("readyReplicas") == 2
            return (
                done
                and all(
                    p["metadata"]["labels"]["serving.darwin.ai/revision"] != old_revision
                    for p in live
                )
                and live
            )

        live = wait_for(rolled, timeout=180, what="rolled out to v2")
        v2 = staging_pods(cluster, namespace, "v2")
        holding = {node_of(p) for p in v2 if p["status"].get("phase") == "Succeeded"}
        assert {p["spec"]["nodeName"] for p in live} <= holding
        # v1 is removed from the nodes once no group uses it
        wait_for(
            lambda: (
                not [
                    p
                    for p in staging_pods(cluster, namespace, "v1")
                    if p["status"].get("phase") == "Succeeded"
                ]
            ),
            timeout=120,
            what="v1 pruned",
        )
    finally:
        process.stop()
        cluster.kubectl("delete", "dwe", "--all", "-n", namespace, "--wait=false")
        core.delete_persistent_volume(volume)


def test_a_missing_claim_is_a_condition_and_an_event(cluster, crd_installed, namespace, operator):
    apply(cluster, namespace, staged_manifest("noclaim", staged_after="1s"))

    c = weights_failure(cluster, namespace, "noclaim", "VolumeNotFound")
    assert "PersistentVolumeClaim models" in c["message"]
    assert not pods(cluster, namespace, STAGING)
    assert all(is_gated(p) for p in endpoint_pods(cluster, namespace, "noclaim"))


def test_a_missing_token_secret_stages_nothing_and_says_so(
    cluster, crd_installed, namespace, operator
):
    volume = node_local_volume(cluster, namespace)
    try:
        manifest = staged_manifest("nosecret", staged_after="1s")
        manifest["spec"]["model"]["tokenSecretRef"] = {"name": "hf-token"}
        apply(cluster, namespace, manifest)

        c = weights_failure(cluster, namespace, "nosecret", "SecretNotFound")
        assert "Secret hf-token" in c["message"]
        assert not pods(cluster, namespace, STAGING)
    finally:
        cluster.kubectl("delete", "dwe", "--all", "-n", namespace, "--wait=false")
        k8s.CoreV1Api(cluster.api).delete_persistent_volume(volume)


def test_a_revision_the_hub_does_not_have_keeps_the_old_groups_serving(
    cluster, crd_installed, namespace, operator
):
    wait_for_idle_gpus(cluster)
    volume = node_local_volume(cluster, namespace)
    try:
        apply(cluster, namespace, staged_manifest("norev", staged_after="1s"))
        wait_for(
            lambda: endpoint_status(cluster, namespace, "norev").get("readyReplicas") == 2,
            timeout=120,
            what="2 groups Ready on v1",
        )
        before = {p["metadata"]["uid"] for p in endpoint_pods(cluster, namespace, "norev")}
        manifest = staged_manifest("norev", staged_after="600s")
        manifest["spec"]["model"]["revision"] = "no-such-revision"
        apply(cluster, namespace, manifest)
        missing = wait_for(
            lambda: staging_pods(cluster, namespace, "no-such-revision"),
            timeout=60,
            what="staging pods of the new revision",
        )
        code = staging.FAILURE_BY_REASON["RevisionNotFound"].exit_code
        for pod in missing:
            cluster.kubectl(
                "annotate", "pod", pod["metadata"]["name"], "-n", namespace,
                f"darwin.test/staging-exit={code}",
                "darwin.test/staging-message=the hub has no revision no-such-revision",
            )  # fmt: skip

        c = weights_failure(cluster, namespace, "norev", "RevisionNotFound")
        assert "no-such-revision" in c["message"]
        # nothing serving was touched, and the failure is not retried in a loop
        status = endpoint_status(cluster, namespace, "norev")
        assert status["readyReplicas"] == 2
        assert {p["metadata"]["uid"] for p in endpoint_pods(cluster, namespace, "norev")} == before
        leaders = [
            p
            for p in endpoint_pods(cluster, namespace, "norev")
            if p["metadata"]["labels"].get("serving.darwin.ai/role") == "leader"
        ]
        assert all(p["metadata"]["labels"]["serving.darwin.ai/serving"] == "true" for p in leaders)
        again = staging_pods(cluster, namespace, "no-such-revision")
        assert len(again) == len(missing), "a failed staging was retried at once"
    finally:
        cluster.kubectl("delete", "dwe", "--all", "-n", namespace, "--wait=false")
        k8s.CoreV1Api(cluster.api).delete_persistent_volume(volume)
