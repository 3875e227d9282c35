"""Group health on the local cluster, failures injected with kwok stages: a broken group is
recreated whole within about a second of the fault showing in the API, the other group keeps
serving, recreations back off, and a group that never comes up turns the endpoint Failed."""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.e2e.checks import (
    Watcher,
    apply,
    condition,
    endpoint_pods,
    endpoint_ready,
    endpoint_status,
    events,
    label,
    member,
    wait_for_idle_gpus,
)
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

# Small values so that the tests run in seconds. The resync is long on purpose: a recreation
# sooner than one resync after the fault is the operator reacting to events (and to its own
# deadlines), not a periodic pass. How soon it comes is printed (TIMINGS), not asserted.
RESYNC_SECONDS = 30
BACKOFF_BASE = 1
NODE_LOST_GRACE = 2
HEALTH_FLAGS = (
    "--recreate-backoff-base",
    str(BACKOFF_BASE),
    "--recreate-backoff-cap",
    "4",
    "--node-lost-grace",
    str(NODE_LOST_GRACE),
)
TIMINGS: list[str] = []  # fault in the API -> replacement pods created, printed at the end


@pytest.fixture(scope="module", autouse=True)
def report_timings():
    yield
    if TIMINGS:
        print("\nfault in the API -> replacement pods created:\n  " + "\n  ".join(TIMINGS))


@pytest.fixture
def operator(cluster, crd_installed, namespace, tmp_path):
    process = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        namespaces=(namespace,),
        resync_seconds=RESYNC_SECONDS,
        extra_args=HEALTH_FLAGS,
    ).start()
    yield process
    assert process.stop() == 0, process.log()


# endpoints of these tests: a budget the tests do not exhaust unless they say so
manifest = functools.partial(
    endpoint_manifest, health={"maxGroupRestarts": 5, "restartWindowSeconds": 600}
)


def group_uids(cluster, namespace: str, name: str, group: int) -> dict[str, str]:
    return {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in endpoint_pods(cluster, namespace, name)
        if label(p, "group") == str(group)
    }


def all_uids(cluster, namespace: str, name: str) -> set[str]:
    return {p["metadata"]["uid"] for p in endpoint_pods(cluster, namespace, name)}


def replaced_whole(cluster, namespace, name, group, old: dict[str, str], size: int):
    """The group is back, every pod of it new, and Ready."""

    def check():
        pods = [
            p for p in endpoint_pods(cluster, namespace, name) if label(p, "group") == str(group)
        ]
        fresh = [p for p in pods if p["metadata"]["uid"] not in old.values()]
        status = endpoint_status(cluster, namespace, name)
        groups = {g["index"]: g for g in status.get("groups") or []}
        return (
            len(pods) == len(fresh) == size and groups.get(group, {}).get("phase") == "Ready"
        ) and status

    return check


def time_replacement(watcher: Watcher, what: str, fault_at: float | None, group: int, old_uids):
    created = watcher.pods_created(group, set(old_uids))
    assert fault_at is not None, f"{what}: the fault never showed in the API"
    assert created, f"{what}: no replacement pod was created"
    seconds = min(created) - fault_at
    TIMINGS.append(f"{what}: {seconds:.2f}s")
    return seconds


def annotate(cluster, kind: str, name: str, namespace: str | None, value: str | None) -> None:
    args = ["annotate", kind, name, "--overwrite"]
    args += ["-n", namespace] if namespace else []
    args.append("darwin.test/inject-" if value is None else f"darwin.test/inject={value}")
    cluster.kubectl(*args)


def restarts_of(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses", []))


def test_a_crashed_worker_recreates_its_whole_group_while_the_other_keeps_serving(
    cluster, namespace, operator
):
    name = "crash"
    apply(cluster, namespace, manifest(name, replicas=2, tp=2, pp=2, pods_per_group=2))
    wait_for(endpoint_ready(cluster, namespace, name, 2), timeout=90, what="endpoint Ready 2/2")
    old, other = group_uids(cluster, namespace, name, 0), group_uids(cluster, namespace, name, 1)
    watcher = Watcher(cluster, namespace, name, nodes=True)
    annotate(cluster, "pod", f"{name}-0-1", namespace, "crash")

    status = wait_for(
        replaced_whole(cluster, namespace, name, 0, old, 2),
        timeout=60,
        what="group 0 recreated whole and Ready",
    )
    wait_for(endpoint_ready(cluster, namespace, name, 2), timeout=30, what="endpoint Ready again")
    watcher.stop()
    fault = watcher.first(
        "pod", lambda _, p: p["metadata"]["name"] == f"{name}-0-1" and restarts_of(p) > 0
    )
    seconds = time_replacement(watcher, "worker container crashed", fault, 0, old.values())
    assert seconds < RESYNC_SECONDS, f"replacement {seconds:.2f}s after the fault"

    assert group_uids(cluster, namespace, name, 1) == other  # the other group untouched
    group = status["groups"][0]
    assert group["restarts"] == 1
    assert [r["reason"] for r in group["recreations"]] == ["ContainerRestarted"]
    assert (
        "ContainerRestarted: pod crash-0-1 restarted a container 1 time(s)"
        in (group["lastFailure"])
    )
    assert [p["phase"] for p in group["startup"]][-1] == "Ready"
    reasons = [e["reason"] for e in events(cluster, namespace, name)]
    assert "GroupRecreating" in reasons and "GroupBroken" in reasons  # Degraded, then back
    assert condition(endpoint_status(cluster, namespace, name), "Degraded")["status"] == "False"
    metrics = operator.metrics()
    assert (
        f'darwin_group_recreations_total{{endpoint="{name}",namespace="{namespace}",'
        'reason="ContainerRestarted"} 1.0'
    ) in metrics


def test_a_failed_pod_and_a_pod_deleted_by_hand_each_recreate_the_group(
    cluster, namespace, operator
):
    name = "faults"
    apply(cluster, namespace, manifest(name, replicas=1, tp=1, pp=2, pods_per_group=2))
    wait_for(endpoint_ready(cluster, namespace, name, 1), timeout=90, what="endpoint Ready")

    old = group_uids(cluster, namespace, name, 0)
    watcher = Watcher(cluster, namespace, name, nodes=True)
    annotate(cluster, "pod", f"{name}-0-1", namespace, "fail")
    wait_for(
        replaced_whole(cluster, namespace, name, 0, old, 2), timeout=60, what="recreated (fail)"
    )
    watcher.stop()
    fault = watcher.first(
        "pod",
        lambda _, p: (
            p["metadata"]["name"] == f"{name}-0-1" and p.get("status", {}).get("phase") == "Failed"
        ),
    )
    time_replacement(watcher, "pod Failed", fault, 0, old.values())

    old = group_uids(cluster, namespace, name, 0)
    watcher = Watcher(cluster, namespace, name, nodes=True)
    worker = member(cluster, namespace, name, 0, 1)["metadata"]["name"]  # a new incarnation's
    cluster.kubectl("delete", "pod", worker, "-n", namespace, "--wait=false")
    status = wait_for(
        replaced_whole(cluster, namespace, name, 0, old, 2), timeout=60, what="recreated (delete)"
    )
    watcher.stop()
    fault = watcher.first(
        "pod",
        lambda typ, p: (
            p["metadata"]["uid"] == old[worker]
            and (typ == "DELETED" or bool(p["metadata"].get("deletionTimestamp")))
        ),
    )
    seconds = time_replacement(
        watcher, "pod deleted by hand (after a 1s backoff)", fault, 0, old.values()
    )
    # the second recreation within the window waits the base backoff, and no resync
    assert BACKOFF_BASE <= seconds < BACKOFF_BASE + RESYNC_SECONDS

    group = status["groups"][0]
    assert [r["reason"] for r in group["recreations"]] == ["PodFailed", "MemberDeleted"]
    assert group["restarts"] == 2
    assert "MemberDeleted: rank 1 deleted by another client" in group["lastFailure"]


def test_a_node_going_not_ready_recreates_its_group_on_another_node(cluster, namespace, operator):
    name = "lostnode"
    wait_for_idle_gpus(cluster)
    apply(cluster, namespace, manifest(name, replicas=2))  # 6 GPUs a pod: one group a node
    wait_for(endpoint_ready(cluster, namespace, name, 2), timeout=90, what="endpoint Ready 2/2")
    pod = next(p for p in endpoint_pods(cluster, namespace, name) if label(p, "group") == "0")
    node = pod["spec"]["nodeName"]
    old, other = group_uids(cluster, namespace, name, 0), group_uids(cluster, namespace, name, 1)
    watcher = Watcher(cluster, namespace, name, nodes=True)
    annotate(cluster, "node", node, None, "not-ready")
    try:
        status = wait_for(
            replaced_whole(cluster, namespace, name, 0, old, 1),
            timeout=90,
            what="group 0 recreated elsewhere",
        )
        watcher.stop()
        fault = watcher.first(
            "node",
            lambda _, n: (
                n["metadata"]["name"] == node
                and any(
                    c["type"] == "Ready" and c["status"] != "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            ),
        )
        seconds = time_replacement(
            watcher, "node NotReady (includes the 2s --node-lost-grace)", fault, 0, old.values()
        )
        assert seconds < NODE_LOST_GRACE + RESYNC_SECONDS  # at the grace's end, not a resync
        moved = next(p for p in endpoint_pods(cluster, namespace, name) if label(p, "group") == "0")
        assert moved["spec"]["nodeName"] != node
        assert group_uids(cluster, namespace, name, 1) == other
        assert status["groups"][0]["recreations"][0]["reason"] == "NodeLost"
    finally:
        annotate(cluster, "node", node, None, None)
        wait_for(
            lambda: all(
                c["status"] == "True"
                for c in cluster.json("get", "node", node)["status"]["conditions"]
                if c["type"] == "Ready"
            ),
            timeout=60,
            what=f"{node} Ready again",
        )


def test_a_group_that_never_becomes_ready_fails_the_endpoint_past_the_budget_then_stays_still(
    cluster, namespace, operator
):
    name = "neverready"
    doc = manifest(
        name,
        replicas=1,
        tp=1,
        pp=2,
        pods_per_group=2,
        ready_after="24h",
        health={"startupTimeoutSeconds": 10, "maxGroupRestarts": 2, "restartWindowSeconds": 600},
    )
    watcher = Watcher(cluster, namespace, name, nodes=True)
    apply(cluster, namespace, doc)

    def failed():
        status = endpoint_status(cluster, namespace, name)
        return status if status.get("phase") == "Failed" else None

    status = wait_for(failed, timeout=120, what="endpoint Failed")
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == "MaxGroupRestartsExceeded"
    assert "group 0 broke 3 times" in degraded["message"]
    assert "StartupTimeout, StartupTimeout, StartupTimeout" in degraded["message"]
    assert status["health"]["failure"]["group"] == 0
    assert status["groups"][0]["restarts"] == 2
    failed_events = [
        e for e in events(cluster, namespace, name) if e["reason"] == "MaxGroupRestartsExceeded"
    ]
    assert failed_events and "group 0" in failed_events[0]["message"]
    creations = len(watcher.pods_created(0, set()))
    assert creations == 6  # three instances of two pods: the first and two recreations

    time.sleep(60)  # observe a bounded window: nothing may be created or deleted in it
    watcher.stop()
    assert len(watcher.pods_created(0, set())) == creations
    assert endpoint_status(cluster, namespace, name)["phase"] == "Failed"

    # a restart request starts over: the group is recreated and the endpoint leaves Failed
    before = all_uids(cluster, namespace, name)
    cluster.kubectl(
        "annotate",
        "dwe",
        name,
        "-n",
        namespace,
        "serving.darwin.ai/restartedAt=2030-01-01T00:00:00Z",
    )
    wait_for(
        lambda: (
            endpoint_status(cluster, namespace, name).get("phase") != "Failed"
            and all_uids(cluster, namespace, name) - before
        ),
        timeout=60,
        what="Failed cleared and new pods after restartedAt",
    )
    assert "failure" not in endpoint_status(cluster, namespace, name)["health"]


@pytest.mark.parametrize("kill_when", ["marked", "deleting"])
def test_killed_in_the_middle_of_a_recreation_it_leaves_no_half_group_and_no_duplicate(
    cluster, crd_installed, namespace, tmp_path, kill_when
):
    name = "killed"
    process = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        namespaces=(namespace,),
        resync_seconds=RESYNC_SECONDS,
        extra_args=HEALTH_FLAGS,
    ).start()
    core = k8s.CoreV1Api(cluster.api)
    try:
        apply(cluster, namespace, manifest(name, replicas=2, tp=1, pp=3, pods_per_group=3))
        wait_for(endpoint_ready(cluster, namespace, name, 2), timeout=90, what="endpoint Ready 2/2")
        old = group_uids(cluster, namespace, name, 0)
        other = group_uids(cluster, namespace, name, 1)
        annotate(cluster, "pod", f"{name}-0-2", namespace, "crash")

        def reached() -> bool:
            pods = core.list_namespaced_pod(namespace, label_selector="serving.darwin.ai/group=0")
            if kill_when == "marked":
                return any(
                    "serving.darwin.ai/broken" in (p.metadata.annotations or {}) for p in pods.items
                )
            # the old group's deletion has begun (its successor, new pod names, may already be
            # being created: the kill lands in the deletion or in that creation)
            live = [
                p
                for p in pods.items
                if p.metadata.uid in old.values() and not p.metadata.deletion_timestamp
            ]
            return len(live) < len(old)

        deadline = time.monotonic() + 30
        while not reached():
            assert time.monotonic() < deadline, process.log()
            time.sleep(0.005)
        process.kill()
        process.start()
        status = wait_for(
            replaced_whole(cluster, namespace, name, 0, old, 3),
            timeout=60,
            what="group 0 recreated whole after the restart",
        )
        wait_for(
            endpoint_ready(cluster, namespace, name, 2), timeout=30, what="endpoint Ready again"
        )
    finally:
        assert process.stop() == 0, process.log()
    pods = endpoint_pods(cluster, namespace, name)
    layout = sorted((int(label(p, "group")), int(label(p, "rank"))) for p in pods)
    assert layout == [(g, r) for g in range(2) for r in range(3)]  # no half group, no duplicate
    assert group_uids(cluster, namespace, name, 1) == other
    group = status["groups"][0]
    assert [r["reason"] for r in group["recreations"]] == ["ContainerRestarted"]  # counted once
    assert group["restarts"] == 1
