"""Rolling updates on the local control plane, checked on a record of every pod, EndpointSlice and
endpoint event: a watcher started before the test acts, and invariants over the whole record."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s
from localcluster import NodeShape, node_manifest

from tests.e2e.operator_process import (
    OperatorProcess,
    apply,
    condition,
    endpoint_manifest,
    endpoint_pods,
    endpoint_status,
    event_reasons,
    label,
    operator_binary,
    wait_for_idle_gpus,
)
from tests.e2e.waiting import wait_for

pytestmark = pytest.mark.e2e

PREFIX = "serving.darwin.ai/"


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


# ---- the record ----


class Watcher:
    """Lists, then watches from that list's resourceVersion (so nothing is missed), the
    endpoint's pods, its client Service's EndpointSlices and the endpoint; every event is kept
    with the time it arrived."""

    def __init__(self, cluster, namespace: str, name: str) -> None:
        self.api = cluster.api
        self.events: list[tuple[float, str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._responses: list[Any] = []
        self._stopping = False
        paths = {
            "pod": (f"/api/v1/namespaces/{namespace}/pods", f"{PREFIX}endpoint={name}"),
            "slice": (
                f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                f"kubernetes.io/service-name={name}",
            ),
            "endpoint": (
                f"/apis/serving.darwin.ai/v1alpha1/namespaces/{namespace}/darwinendpoints",
                None,
            ),
        }
        self._threads = []
        for kind, (path, selector) in paths.items():
            version = self._list(kind, path, selector)
            thread = threading.Thread(
                target=self._watch, args=(kind, path, selector, version), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _request(self, path: str, query: list[tuple[str, str]], stream: bool):
        method, url, headers, _, _ = self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        return self.api.rest_client.pool_manager.request(
            method, url, headers=headers, preload_content=not stream, timeout=None
        )

    def _list(self, kind: str, path: str, selector: str | None) -> str:
        query = [("labelSelector", selector)] if selector else []
        listing = json.loads(self._request(path, query, stream=False).data)
        now = time.monotonic()
        with self._lock:
            for item in listing.get("items") or []:
                self.events.append((now, kind, "ADDED", item))
        return listing["metadata"]["resourceVersion"]

    def _watch(self, kind: str, path: str, selector: str | None, version: str) -> None:
        query = [("watch", "true"), ("resourceVersion", version), ("timeoutSeconds", "3600")]
        if selector:
            query.append(("labelSelector", selector))
        response = self._request(path, query, stream=True)
        self._responses.append(response)
        buffer = b""
        try:
            for chunk in response.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    event = json.loads(line)
                    with self._lock:
                        self.events.append((time.monotonic(), kind, event["type"], event["object"]))
        except Exception:
            if not self._stopping:
                raise

    def of(self, kind: str) -> list[tuple[float, str, dict[str, Any]]]:
        with self._lock:
            return [(t, typ, obj) for t, k, typ, obj in self.events if k == kind]

    def stop(self) -> Watcher:
        self._stopping = True
        for response in self._responses:
            response.shutdown()
        return self


@dataclass
class Replicas:
    """spec.replicas over time, as the test set it (the operator can act on a value only after
    the test wrote it)."""

    changes: list[tuple[float, int]] = field(default_factory=list)

    def set(self, value: int) -> None:
        self.changes.append((time.monotonic(), value))

    def around(self, t: float, slack: float = 5.0) -> tuple[int, int]:
        """Lowest and highest value in effect within [t - slack, t]: a reconcile that began
        before a change may still act on the value before it."""
        values = [v for when, v in self.changes if t - slack <= when <= t]
        before = [v for when, v in self.changes if when < t - slack]
        if before:
            values.append(before[-1])
        if not values:
            values = [self.changes[0][1]]
        return min(values), max(values)


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _deleting(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def available_groups(pods: dict[str, dict[str, Any]], pods_per_group: int) -> set[int]:
    """Groups whose pods are all there, Ready and not being deleted, with the leader serving."""
    by_group: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for pod in pods.values():
        by_group[int(label(pod, "group"))].append(pod)
    return {
        index
        for index, members in by_group.items()
        if len(members) == pods_per_group
        and all(_ready(p) and not _deleting(p) for p in members)
        and any(label(p, "rank") == "0" and label(p, "serving") == "true" for p in members)
    }


@dataclass
class Limits:
    max_unavailable: int
    max_surge: int
    pods_per_group: int = 1


def check_pods(watcher: Watcher, replicas: Replicas, limits: Limits) -> dict[str, Any]:
    """Replays every pod event: the operator never takes a group down below replicas -
    maxUnavailable available groups, never has more than replicas + maxSurge groups, and a
    group's live pods never mix revisions. Returns what the replay saw."""
    pods: dict[str, dict[str, Any]] = {}
    before: set[int] | None = None
    lowest = None
    deletions: list[int] = []  # group indices, in the order their deletion began
    indices_seen: set[int] = set()
    started = False
    for t, typ, pod in watcher.of("pod"):
        name = pod["metadata"]["name"]
        if typ == "DELETED":
            pods.pop(name, None)
        else:
            previous = pods.get(name)
            if _deleting(pod) and (previous is None or not _deleting(previous)):
                deletions.append(int(label(pod, "group")))
            pods[name] = pod
        low, high = replicas.around(t)
        groups = {int(label(p, "group")) for p in pods.values()}
        indices_seen |= groups
        assert len(groups) <= high + limits.max_surge, (
            f"{len(groups)} groups {sorted(groups)} > replicas {high} + maxSurge"
        )
        for index in groups:
            live = {
                label(p, "revision")
                for p in pods.values()
                if not _deleting(p) and int(label(p, "group")) == index
            }
            assert len(live) <= 1, f"group {index} mixes revisions {live}"
        now = available_groups(pods, limits.pods_per_group)
        started = started or len(now) >= replicas.changes[0][1]
        if started and before is not None and len(now) < len(before):
            assert len(now) >= low - limits.max_unavailable, (
                f"groups {sorted(before - now)} taken down leaving {sorted(now)} available "
                f"(replicas {low}, maxUnavailable {limits.max_unavailable})"
            )
        if started:
            lowest = len(now) if lowest is None else min(lowest, len(now))
        before = now
    return {"lowest": lowest, "deletions": _dedupe(deletions), "indices": indices_seen}


def _dedupe(values: list[int]) -> list[int]:
    seen: list[int] = []
    for v in values:
        if not seen or seen[-1] != v:
            seen.append(v)
    return seen


def check_slices(watcher: Watcher, drain_seconds: float) -> dict[str, Any]:
    """From the client Service's EndpointSlices: the fewest ready endpoints once all were up,
    and that every leader that was a ready endpoint left the slices at least drainSeconds
    before its pod got a deletionTimestamp. Pods are told apart by uid: a group replaced in
    place comes back under the same name."""
    slices: dict[str, dict[str, bool]] = {}
    left_at: dict[str, float] = {}  # pod uid -> when it last stopped being a ready endpoint
    was_ready: set[str] = set()
    counts: list[int] = []
    for t, typ, obj in watcher.of("slice"):
        name = obj["metadata"]["name"]
        if typ == "DELETED":
            slices.pop(name, None)
        else:
            slices[name] = {
                e["targetRef"]["uid"]: bool((e.get("conditions") or {}).get("ready"))
                for e in obj.get("endpoints") or []
                if e.get("targetRef")
            }
        ready_now = {pod for entries in slices.values() for pod, ok in entries.items() if ok}
        for pod in was_ready - ready_now:
            left_at.setdefault(pod, t)
        for pod in ready_now:
            left_at.pop(pod, None)
        was_ready |= ready_now
        counts.append(len(ready_now))
    deleted_at: dict[str, tuple[float, str]] = {}
    for t, _, pod in watcher.of("pod"):
        if _deleting(pod):
            deleted_at.setdefault(pod["metadata"]["uid"], (t, pod["metadata"]["name"]))
    gaps = {}
    for uid, (t_deleted, name) in deleted_at.items():
        if uid not in was_ready:
            continue  # never served traffic: nothing to drain
        assert uid in left_at and left_at[uid] <= t_deleted, f"{name} deleted while serving"
        gaps[uid] = t_deleted - left_at[uid]
        assert gaps[uid] >= drain_seconds, (
            f"{name} left the Service only {gaps[uid]:.2f}s before deletion "
            f"(drain {drain_seconds}s)"
        )
    return {"counts": counts, "drain_gaps": gaps}


def lowest_ready_endpoints(counts: list[int], replicas: int) -> int:
    """The fewest ready endpoints after the first time all replicas were."""
    if replicas not in counts and not any(c >= replicas for c in counts):
        return 0
    first = next(i for i, c in enumerate(counts) if c >= replicas)
    return min(counts[first:])


def progressing_messages(watcher: Watcher) -> list[str]:
    seen: list[str] = []
    for _, _, obj in watcher.of("endpoint"):
        message = condition(obj.get("status") or {}, "Progressing").get("message", "")
        if message and (not seen or seen[-1] != message):
            seen.append(message)
    return seen


# ---- helpers ----


def rollout_manifest(name: str, replicas: int, **rollout: Any) -> dict[str, Any]:
    """Groups of one pod with 2 GPUs (TP2), Ready 1s after start, 2s drain."""
    manifest = endpoint_manifest(name, replicas=replicas, tp=2, pp=1, ready_after="1s")
    manifest["spec"]["rollout"].update(rollout)
    return manifest


def patch(cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "dwe", name, "-n", namespace, "--type", "merge", "-p", json.dumps({"spec": spec})
    )


def set_image(cluster, namespace: str, name: str, tag: str) -> None:
    patch(cluster, namespace, name, {"engine": {"image": f"vllm/vllm-openai:{tag}"}})


def rolled_out(cluster, namespace: str, name: str, replicas: int, previous: str | None = None):
    """Every group Ready on the update revision (a new one, if `previous` is given)."""

    def check():
        status = endpoint_status(cluster, namespace, name)
        revision = status.get("updateRevision")
        groups = status.get("groups") or []
        done = (
            status.get("phase") == "Ready"
            and revision != previous
            and status.get("currentRevision") == revision
            and [g["index"] for g in groups] == list(range(replicas))
            and all(g["revision"] == revision and g["phase"] == "Ready" for g in groups)
        )
        return status if done else None

    return check


def ready(cluster, namespace, name, replicas):
    """Every group Ready and every leader serving (the record of a rollout starts from there)."""
    status = wait_for(
        rolled_out(cluster, namespace, name, replicas), timeout=120, what=f"{name} Ready"
    )
    serving_in_slices(cluster, namespace, name, replicas)
    return status


def serving_in_slices(cluster, namespace, name, count):
    """Wait until the client Service's EndpointSlices list `count` ready leaders: the operator's
    status reads pod readiness directly, the EndpointSlice controller catches up a moment later,
    and a drain check needs every leader to have been serving before the rollout starts."""

    def ready_endpoints():
        slices = cluster.json(
            "get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={name}"
        )["items"]
        return sum(
            1
            for s in slices
            for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready")
        )

    wait_for(lambda: ready_endpoints() == count, timeout=30, what=f"{count} leaders in the slices")


def revisions_by_group(cluster, namespace, name) -> dict[int, str]:
    return {
        int(label(p, "group")): label(p, "revision")
        for p in endpoint_pods(cluster, namespace, name)
    }


def uids(cluster, namespace, name) -> dict[str, str]:
    return {
        p["metadata"]["name"]: p["metadata"]["uid"] for p in endpoint_pods(cluster, namespace, name)
    }


def reconciles(operator: OperatorProcess) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith('darwin_reconcile_total{result="success"}'):
            return float(line.split()[-1])
    return 0.0


# ---- the scenarios ----


def test_image_change_replaces_groups_one_at_a_time_highest_first_with_drain(
    cluster, namespace, operator
):
    name = "roll"
    replicas = Replicas()
    replicas.set(4)
    apply(cluster, namespace, rollout_manifest(name, 4, maxUnavailable=1, maxSurge=0))
    first = ready(cluster, namespace, name, 4)
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
    first = ready(cluster, namespace, name, 4)
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
    first = ready(cluster, namespace, name, 4)
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
    apply(cluster, namespace, rollout_manifest(name, 4, partition=2))
    first = ready(cluster, namespace, name, 4)
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
    assert [after[f"{name}-{i}-0"] == before[f"{name}-{i}-0"] for i in range(4)] == [
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
        pods = {p["metadata"]["name"]: p for p in endpoint_pods(cluster, namespace, name)}
        pod = pods.get(f"{name}-0-0")
        return (
            pod is not None
            and pod["metadata"]["uid"] != before[f"{name}-0-0"]
            and label(pod, "revision") == first["updateRevision"]
            and pod["spec"]["containers"][0]["image"] == old_image
            and _ready(pod)
        )

    wait_for(back_on_its_revision, timeout=90, what="group 0 recreated on its old revision")
    # nothing of the group was left to mark, yet its recreation is on record, with its reason
    group = endpoint_status(cluster, namespace, name)["groups"][0]
    assert [r["reason"] for r in group["recreations"]] == ["MemberDeleted"]


def test_paused_nothing_moves_until_unpaused(cluster, namespace, operator):
    name = "frozen"
    apply(cluster, namespace, rollout_manifest(name, 3, paused=True))
    first = ready(cluster, namespace, name, 3)
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
    apply(cluster, namespace, rollout_manifest(name, 2))
    first = ready(cluster, namespace, name, 2)
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
    apply(cluster, namespace, rollout_manifest(name, 4, maxUnavailable=1, maxSurge=0))
    first = ready(cluster, namespace, name, 4)
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
    apply(cluster, namespace, rollout_manifest(name, 4, maxUnavailable=1, maxSurge=0))
    first = ready(cluster, namespace, name, 4)
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
        status = ready(cluster, namespace, name, 4)
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
