"""Rolling updates on the local control plane, checked on a record of every pod, EndpointSlice and
endpoint event: a watcher started before the test acts, and invariants over the whole record."""

from __future__ import annotations

import random
import subprocess
import time

import pytest
from kubernetes import client as k8s
from localcluster import NodeShape, node_manifest

from tests.e2e.checks import (
    PREFIX,
    Limits,
    Replicas,
    Watcher,
    apply,
    check_pods,
    check_slices,
    condition,
    endpoint_pods,
    endpoint_status,
    event_reasons,
    is_ready,
    label,
    lowest_ready_endpoints,
    member,
    patch,
    progressing_messages,
    reconciles,
    revisions_by_group,
    rolled_out,
    set_image,
    uids,
    wait_for_idle_gpus,
    wait_serving,
)
from tests.e2e.operator_process import OperatorProcess, operator_binary
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

# Groups of one pod with 2 GPUs (TP2), Ready 1s after start, 2s drain.
SMALL_GROUPS = {"tp": 2, "pp": 1, "ready_after": "1s"}


@pytest.fixture
def extra_node(cluster):
    """A fifth B200 node, for a surge group to go to. Requested before `namespace`, so that it
    is removed after the test's pods are gone."""
    wait_for_idle_gpus(cluster)
    core = k8s.CoreV1Api(cluster.api)
    node = node_manifest(4, NodeShape())
    core.create_node(node)
    name = node["metadata"]["name"]

    def node_ready():
        conditions = core.read_node(name).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    wait_for(node_ready, timeout=60, what=f"node {name} Ready")
    yield name
    core.delete_node(name)


def test_image_change_replaces_groups_one_at_a_time_highest_first_with_drain(
    cluster, namespace, operator
):
    name = "roll"
    replicas = Replicas()
    replicas.set(4)
    apply(
        cluster,
        namespace,
        endpoint_manifest(
            name, replicas=4, rollout={"maxUnavailable": 1, "maxSurge": 0}, **SMALL_GROUPS
        ),
    )
    first = wait_serving(cluster, namespace, name, 4)
    watcher = Watcher(cluster, namespace, name)
    set_image(cluster, namespace, name, "v0.34.0")
    status = wait_for(
        rolled_out(cluster, namespace, name, 4, first["updateRevision"]),
        timeout=120,
        what="every group on the new revision",
    )
    watcher.stop()

    seen = check_pods(watcher, replicas, Limits(max_unavailable=1, max_surge=0))
    assert seen["lowest"] == 3  # one group at a time: never fewer than 3 Ready
    assert seen["deletions"] == [3, 2, 1, 0]  # highest index first, each once
    assert seen["indices"] == {0, 1, 2, 3}
    slices = check_slices(watcher, drain_seconds=2)
    assert len(slices["drain_gaps"]) == 4
    assert lowest_ready_endpoints(slices["counts"], 4) >= 3

    assert status["updatedReplicas"] == 4 and status["availableReplicas"] == 4
    assert status["currentRevision"] == status["updateRevision"] != first["updateRevision"]
    assert "rolloutStartedAt" not in status
    messages = progressing_messages(watcher)
    assert any(m.startswith("2/4 groups updated") for m in messages), messages
    reasons = event_reasons(cluster, namespace, name)
    assert reasons.count("GroupReplaced") == 4
    assert "RolloutStarted" in reasons and "RolloutComplete" in reasons
    metrics = operator.metrics()
    assert f'darwin_rollout_in_progress{{endpoint="{name}",namespace="{namespace}"}} 0.0' in metrics
    assert "darwin_rollout_duration_seconds_count 1.0" in metrics
    # node drains: the PodDisruptionBudget on every member allows what maxUnavailable allows
    pdb = wait_for(
        lambda: (
            (p := cluster.json("get", "pdb", f"{name}-members", "-n", namespace))
            .get("status", {})
            .get("disruptionsAllowed")
            == 1
            and p
        ),
        timeout=30,
        what="the PodDisruptionBudget allowing one pod down",
    )
    assert pdb["spec"]["minAvailable"] == 3 and pdb["status"]["expectedPods"] == 4


def test_surge_with_a_free_node_keeps_every_group_available(
    cluster, crd_installed, extra_node, namespace, operator
):
    name = "surge"
    replicas = Replicas()
    replicas.set(4)
    # the reference shape: 6 GPUs, one group per 8-GPU node; 4 groups on 5 nodes
    manifest = endpoint_manifest(name, replicas=4, ready_after="1s", drain_seconds=1)
    manifest["spec"]["rollout"].update(maxUnavailable=0, maxSurge=1)
    apply(cluster, namespace, manifest)
    first = wait_serving(cluster, namespace, name, 4)
    watcher = Watcher(cluster, namespace, name)
    set_image(cluster, namespace, name, "v0.34.0")
    wait_for(
        rolled_out(cluster, namespace, name, 4, first["updateRevision"]),
        timeout=180,
        what="every group on the new revision",
    )
    watcher.stop()
    seen = check_pods(watcher, replicas, Limits(max_unavailable=0, max_surge=1))
    assert seen["lowest"] == 4  # never fewer than 4 Ready
    assert seen["indices"] == {0, 1, 2, 3, 4}  # group 4 was the surge group, now gone
    assert sorted(seen["deletions"][:4]) == [0, 1, 2, 3] and seen["deletions"][-1] == 4
    slices = check_slices(watcher, drain_seconds=1)
    assert lowest_ready_endpoints(slices["counts"], 4) >= 4


def test_without_room_for_a_surge_group_it_says_so_and_replaces_in_place(
    cluster, crd_installed, namespace, operator
):
    wait_for_idle_gpus(cluster)
    name = "tight"
    replicas = Replicas()
    replicas.set(4)
    manifest = endpoint_manifest(name, replicas=4, ready_after="1s", drain_seconds=1)
    manifest["spec"]["rollout"].update(maxUnavailable=1, maxSurge=1)  # 4 of 4 nodes taken
    apply(cluster, namespace, manifest)
    first = wait_serving(cluster, namespace, name, 4)
    watcher = Watcher(cluster, namespace, name)
    set_image(cluster, namespace, name, "v0.34.0")
    wait_for(
        rolled_out(cluster, namespace, name, 4, first["updateRevision"]),
        timeout=180,
        what="every group on the new revision",
    )
    watcher.stop()
    seen = check_pods(watcher, replicas, Limits(max_unavailable=1, max_surge=1))
    assert seen["lowest"] >= 3
    messages = progressing_messages(watcher)
    assert any("no room for a surge group" in m and "in place" in m for m in messages), messages


def test_partition_moves_only_the_groups_at_or_above_it(cluster, namespace, operator):
    name = "canary"
    apply(
        cluster,
        namespace,
        endpoint_manifest(name, replicas=4, rollout={"partition": 2}, **SMALL_GROUPS),
    )
    first = wait_serving(cluster, namespace, name, 4)
    before = uids(cluster, namespace, name)
    set_image(cluster, namespace, name, "v0.34.0")

    def partitioned():
        status = endpoint_status(cluster, namespace, name)
        revisions = revisions_by_group(cluster, namespace, name)
        new = status.get("updateRevision")
        done = (
            new != first["updateRevision"]
            and revisions
            == {0: first["updateRevision"], 1: first["updateRevision"], 2: new, 3: new}
            and status.get("phase") == "Ready"
            and status.get("readyReplicas") == 4
        )
        return status if done else None

    status = wait_for(partitioned, timeout=90, what="groups 2 and 3 updated, Ready")
    after = uids(cluster, namespace, name)
    assert [after.get(f"{name}-{i}-0") == before[f"{name}-{i}-0"] for i in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert status["currentRevision"] == first["updateRevision"]  # most groups are still old
    assert condition(status, "Progressing")["message"].startswith("2/4 groups updated")
    assert "rolloutStartedAt" not in status  # as far as the partition allows, it is done

    # Each revision's spec is kept in a ControllerRevision owned by the endpoint, so a group
    # below the partition that is lost comes back on its own revision, not the update one.
    selector = f"{PREFIX}endpoint={name}"
    kept = cluster.json("get", "controllerrevisions", "-n", namespace, "-l", selector)["items"]
    stored = {r["metadata"]["labels"][f"{PREFIX}revision"] for r in kept}
    assert stored == {first["updateRevision"], status["updateRevision"]}
    by_name = {p["metadata"]["name"]: p for p in endpoint_pods(cluster, namespace, name)}
    old_image = by_name[f"{name}-0-0"]["spec"]["containers"][0]["image"]
    cluster.kubectl("delete", "pod", f"{name}-0-0", "-n", namespace, "--wait=false")

    def back_on_its_revision():
        pod = member(cluster, namespace, name, 0, 0)
        return (
            pod is not None
            and pod["metadata"]["uid"] != before[f"{name}-0-0"]
            and label(pod, "revision") == first["updateRevision"]
            and pod["spec"]["containers"][0]["image"] == old_image
            and is_ready(pod)
        )

    wait_for(back_on_its_revision, timeout=90, what="group 0 recreated on its old revision")
    # nothing of the group was left to mark, yet its recreation is on record, with its reason
    group = endpoint_status(cluster, namespace, name)["groups"][0]
    assert [r["reason"] for r in group["recreations"]] == ["MemberDeleted"]


def test_paused_nothing_moves_until_unpaused(cluster, namespace, operator):
    name = "frozen"
    apply(
        cluster,
        namespace,
        endpoint_manifest(name, replicas=3, rollout={"paused": True}, **SMALL_GROUPS),
    )
    first = wait_serving(cluster, namespace, name, 3)
    before = uids(cluster, namespace, name)
    watcher = Watcher(cluster, namespace, name)
    set_image(cluster, namespace, name, "v0.34.0")
    status = wait_for(
        lambda: (
            (s := endpoint_status(cluster, namespace, name)).get("updateRevision")
            != first["updateRevision"]
            and condition(s, "Progressing").get("reason") == "RolloutPaused"
            and s
        ),
        timeout=30,
        what="the paused rollout in the status",
    )
    # the operator looks again (resync every 3s) and still moves nothing
    seen = reconciles(operator)
    wait_for(lambda: reconciles(operator) >= seen + 2, timeout=30, what="two more reconciles")
    assert uids(cluster, namespace, name) == before
    assert status["updatedReplicas"] == 0
    assert condition(status, "Progressing")["message"].startswith("rollout paused: 0/3")

    patch(cluster, namespace, name, {"rollout": {"paused": False}})
    wait_for(
        rolled_out(cluster, namespace, name, 3, first["updateRevision"]),
        timeout=90,
        what="the rollout done once unpaused",
    )
    watcher.stop()
    assert any(label(pod, "serving") == "false" for _, _, pod in watcher.of("pod"))
    assert not set(uids(cluster, namespace, name).values()) & set(before.values())


def test_restarted_at_annotation_and_restart_command_roll_every_group(cluster, namespace, operator):
    name = "restarts"
    apply(cluster, namespace, endpoint_manifest(name, replicas=2, **SMALL_GROUPS))
    first = wait_serving(cluster, namespace, name, 2)
    before = uids(cluster, namespace, name)
    cluster.kubectl(
        "annotate", "dwe", name, "-n", namespace, f"{PREFIX}restartedAt=2025-06-15T00:00:00Z"
    )
    second = wait_for(
        rolled_out(cluster, namespace, name, 2, first["updateRevision"]),
        timeout=90,
        what="a rolling restart from the annotation",
    )
    middle = uids(cluster, namespace, name)
    assert not set(middle.values()) & set(before.values())  # every pod is new

    result = subprocess.run(
        [operator_binary(), "restart", name, "-n", namespace, "--kubeconfig", cluster.kubeconfig],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    wait_for(
        rolled_out(cluster, namespace, name, 2, second["updateRevision"]),
        timeout=90,
        what="a rolling restart from `darwin-operator restart`",
    )
    assert not set(uids(cluster, namespace, name).values()) & set(middle.values())


def test_scale_up_during_a_rollout(cluster, namespace, operator):
    name = "grows"
    replicas = Replicas()
    replicas.set(4)
    apply(
        cluster,
        namespace,
        endpoint_manifest(
            name, replicas=4, rollout={"maxUnavailable": 1, "maxSurge": 0}, **SMALL_GROUPS
        ),
    )
    first = wait_serving(cluster, namespace, name, 4)
    watcher = Watcher(cluster, namespace, name)
    set_image(cluster, namespace, name, "v0.34.0")
    wait_for(
        lambda: (
            endpoint_status(cluster, namespace, name).get("updatedReplicas", 0) >= 1
            and endpoint_status(cluster, namespace, name).get("updateRevision")
            != first["updateRevision"]
        ),
        timeout=60,
        what="the rollout under way",
    )
    replicas.set(6)
    cluster.kubectl("scale", "dwe", name, "-n", namespace, "--replicas=6")
    wait_for(
        rolled_out(cluster, namespace, name, 6, first["updateRevision"]),
        timeout=120,
        what="6 groups on the new revision",
    )
    watcher.stop()
    seen = check_pods(watcher, replicas, Limits(max_unavailable=1, max_surge=0))
    assert seen["lowest"] >= 3
    check_slices(watcher, drain_seconds=2)


def test_a_second_change_mid_rollout_retargets_it(cluster, namespace, operator):
    name = "retarget"
    replicas = Replicas()
    replicas.set(4)
    apply(
        cluster,
        namespace,
        endpoint_manifest(
            name, replicas=4, rollout={"maxUnavailable": 1, "maxSurge": 0}, **SMALL_GROUPS
        ),
    )
    first = wait_serving(cluster, namespace, name, 4)
    watcher = Watcher(cluster, namespace, name)
    set_image(cluster, namespace, name, "v0.34.0")
    middle = wait_for(
        lambda: (
            (s := endpoint_status(cluster, namespace, name)).get("updatedReplicas", 0) >= 1
            and s.get("updateRevision") != first["updateRevision"]
            and s
        ),
        timeout=60,
        what="the first rollout under way",
    )
    set_image(cluster, namespace, name, "v0.35.0")
    final = wait_for(
        rolled_out(cluster, namespace, name, 4, middle["updateRevision"]),
        timeout=120,
        what="every group on the third revision",
    )
    watcher.stop()
    assert final["updateRevision"] not in (first["updateRevision"], middle["updateRevision"])
    assert set(revisions_by_group(cluster, namespace, name).values()) == {final["updateRevision"]}
    seen = check_pods(watcher, replicas, Limits(max_unavailable=1, max_surge=0))
    assert seen["lowest"] >= 3
    check_slices(watcher, drain_seconds=2)


def test_killed_at_random_moments_every_rollout_completes_within_the_limits(
    cluster, crd_installed, namespace, tmp_path
):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    name = "crashes"
    replicas = Replicas()
    replicas.set(4)
    process = OperatorProcess(
        cluster.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)
    ).start()
    # groups of 2 pods (a leader and a worker, 2 GPUs each), so deletions and creations of a
    # group can be cut part way
    manifest = endpoint_manifest(
        name, replicas=4, tp=2, pp=2, pods_per_group=2, ready_after="1s", drain_seconds=1
    )
    manifest["spec"]["rollout"].update(maxUnavailable=1, maxSurge=1)
    kills = 0
    try:
        apply(cluster, namespace, manifest)
        status = wait_serving(cluster, namespace, name, 4)
        watcher = Watcher(cluster, namespace, name)
        for tag in ("v1", "v2", "v3", "v4"):
            previous = status["updateRevision"]
            set_image(cluster, namespace, name, tag)
            for _ in range(5):  # 5 kills in each of 4 rollouts: 20 in all
                time.sleep(rng.uniform(0.0, 3.0))  # a random moment, not a wait for correctness
                process.kill()
                kills += 1
                process.start()
            status = wait_for(
                rolled_out(cluster, namespace, name, 4, previous),
                timeout=120,
                what=f"rollout to {tag} complete after the kills (seed {seed})",
            )
        watcher.stop()
    finally:
        code = process.stop()
    assert code == 0 and kills == 20
    seen = check_pods(watcher, replicas, Limits(max_unavailable=1, max_surge=1, pods_per_group=2))
    assert seen["lowest"] >= 3, f"seed {seed}"
    check_slices(watcher, drain_seconds=1)
    pods = endpoint_pods(cluster, namespace, name)
    layout = sorted((int(label(p, "group")), int(label(p, "rank"))) for p in pods)
    assert layout == [(g, r) for g in range(4) for r in range(2)]  # no orphan, no duplicate
    assert {label(p, "revision") for p in pods} == {status["updateRevision"]}
    assert not any(p["metadata"].get("deletionTimestamp") for p in pods)
