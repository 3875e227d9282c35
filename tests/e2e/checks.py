"""Predicates and invariant checks for the e2e tests: what a pod or an endpoint is, and the
record of a rollout (every pod, EndpointSlice and endpoint event from a watch started before the
test acts) with the invariants checked over it."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.e2e.waiting import wait_for

if TYPE_CHECKING:
    from tests.e2e.operator_process import OperatorProcess

PREFIX = "serving.darwin.ai/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_deleting(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def endpoint_ready(cluster, namespace: str, name: str, replicas: int) -> Callable[[], dict | None]:
    """A predicate for wait_for: the endpoint's status once it is Ready with `replicas` groups."""

    def check() -> dict | None:
        status = endpoint_status(cluster, namespace, name)
        ok = status.get("phase") == "Ready" and status.get("readyReplicas") == replicas
        return status if ok else None

    return check


# ---- endpoints and what tests read back ----

GPU = "nvidia.com/gpu"


def apply(cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def get_endpoint(cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.json("get", "darwinendpoint", name, "-n", namespace)


def endpoint_status(cluster, namespace: str, name: str) -> dict[str, Any]:
    return get_endpoint(cluster, namespace, name).get("status") or {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def pods(cluster, namespace: str, selector: str = "serving.darwin.ai/endpoint") -> list[dict]:
    return cluster.json("get", "pods", "-n", namespace, "-l", selector)["items"]


def endpoint_pods(cluster, namespace: str, name: str) -> list[dict]:
    return pods(cluster, namespace, f"serving.darwin.ai/endpoint={name}")


def events(cluster, namespace: str, name: str) -> list[dict]:
    return cluster.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]


def event_reasons(cluster, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(cluster, namespace, name)]


def is_gated(pod: dict[str, Any]) -> bool:
    gates = pod["spec"].get("schedulingGates") or []
    return any(g["name"] == "serving.darwin.ai/gang" for g in gates)


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def label(pod: dict[str, Any], key: str) -> str:
    return (pod["metadata"].get("labels") or {}).get(f"serving.darwin.ai/{key}", "")


def member(cluster, namespace: str, name: str, group: int, rank: int) -> dict[str, Any] | None:
    """The pod of a group's current incarnation at `rank` (not one on its way out): a group
    recreated or replaced has pod names of its own (`{name}-{group}-{rank}-{incarnation}`)."""
    return next(
        (
            p
            for p in endpoint_pods(cluster, namespace, name)
            if label(p, "group") == str(group)
            and label(p, "rank") == str(rank)
            and not is_deleting(p)
        ),
        None,
    )


def gpus_of(pod: dict[str, Any]) -> int:
    return sum(
        int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0))
        for c in pod["spec"]["containers"]
    )


def bound_gpus(cluster) -> int:
    """GPUs requested by bound, non-terminal pods anywhere in the cluster."""
    items = cluster.json(
        "get", "pods", "-A", "--field-selector", "status.phase!=Succeeded,status.phase!=Failed"
    )["items"]
    return sum(gpus_of(p) for p in items if p["spec"].get("nodeName"))


def wait_for_idle_gpus(cluster, timeout: float = 120) -> None:
    """Tests that count GPUs need every one free: pods of earlier tests must be gone."""
    from tests.e2e.waiting import wait_for

    wait_for(lambda: bound_gpus(cluster) == 0, timeout=timeout, what="every GPU free")


class PodRecorder:
    """Every version of every pod in a namespace, from a watch started before the action, so a
    test can see states that last only a moment (e.g. created gated)."""

    def __init__(self, cluster, namespace: str) -> None:
        self._process = subprocess.Popen(
            [
                cluster.kubectl_binary,
                "--kubeconfig",
                cluster.kubeconfig,
                "get",
                "pods",
                "-n",
                namespace,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # Read as it comes: a full pipe would stall kubectl, and the events it holds back
        # then would be missing from the record.
        self._out = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        time.sleep(0.5)  # let the watch open before the test acts

    def _read(self) -> None:
        assert self._process.stdout is not None
        self._out = self._process.stdout.read()

    def stop(self) -> list[dict[str, Any]]:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._reader.join(timeout=10)
        out = self._out
        decoder = json.JSONDecoder()
        events: list[dict[str, Any]] = []
        text = out.strip()
        while text:
            try:
                obj, end = decoder.raw_decode(text)
            except json.JSONDecodeError:
                break  # the watch was stopped in the middle of writing its last event
            events.append(obj)
            text = text[end:].lstrip()
        return events

    def first_versions(self) -> dict[str, dict[str, Any]]:
        """Each pod as it was first seen (its ADDED event)."""
        first: dict[str, dict[str, Any]] = {}
        for event in self.stop():
            pod = event["object"]
            first.setdefault(pod["metadata"]["name"], pod)
        return first


# ---- the record ----


class Watcher:
    """Lists, then watches from that list's resourceVersion (so nothing is missed), the
    endpoint's pods, its client Service's EndpointSlices and the endpoint; every event is kept
    with the time it arrived."""

    def __init__(self, cluster, namespace: str, name: str, *, nodes: bool = False) -> None:
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
        if nodes:
            paths["node"] = ("/api/v1/nodes", None)
        self._threads = []
        opened: list[threading.Event] = []
        for kind, (path, selector) in paths.items():
            version = self._list(kind, path, selector)
            opened.append(threading.Event())
            thread = threading.Thread(
                target=self._watch, args=(kind, path, selector, version, opened[-1]), daemon=True
            )
            thread.start()
            self._threads.append(thread)
        # Events are stamped when they arrive: the watches must be open before the test acts.
        for event in opened:
            if not event.wait(30):
                raise AssertionError("a watch of the record did not open within 30 s")

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

    def _watch(
        self, kind: str, path: str, selector: str | None, version: str, opened: threading.Event
    ) -> None:
        query = [("watch", "true"), ("resourceVersion", version), ("timeoutSeconds", "3600")]
        if selector:
            query.append(("labelSelector", selector))
        response = self._request(path, query, stream=True)  # returns once the watch is open
        self._responses.append(response)
        opened.set()
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

    def first(self, kind: str, predicate: Callable[[str, dict[str, Any]], bool]) -> float | None:
        """When the first event of `kind` that `predicate(type, object)` accepts arrived."""
        return next((t for t, typ, obj in self.of(kind) if predicate(typ, obj)), None)

    def pods_created(self, group: int, not_uids: set[str]) -> list[float]:
        """When pods of `group` other than `not_uids` were first seen."""
        return [
            t
            for t, typ, pod in self.of("pod")
            if typ == "ADDED"
            and label(pod, "group") == str(group)
            and pod["metadata"]["uid"] not in not_uids
        ]

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


def available_groups(pods: dict[str, dict[str, Any]], pods_per_group: int) -> set[int]:
    """Groups whose pods are all there, Ready and not being deleted, with the leader serving."""
    by_group: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for pod in pods.values():
        by_group[int(label(pod, "group"))].append(pod)
    return {
        index
        for index, members in by_group.items()
        if len(members) == pods_per_group
        and all(is_ready(p) and not is_deleting(p) for p in members)
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
            if is_deleting(pod) and (previous is None or not is_deleting(previous)):
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
                if not is_deleting(p) and int(label(p, "group")) == index
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
        if is_deleting(pod):
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


def wait_serving(cluster, namespace, name, replicas):
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
    """Reconciles run, counting those skipped because nothing they read had changed."""
    counted = (
        'darwin_reconcile_total{result="success"}',
        'darwin_reconcile_total{result="unchanged"}',
    )
    return sum(
        float(line.split()[-1])
        for line in operator.metrics().splitlines()
        if line.startswith(counted)
    )


# ---- the scenarios ----
