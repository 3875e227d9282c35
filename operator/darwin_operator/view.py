"""What a reconcile reads of the cluster: from watches (WatchedView) or, without them, by
listing (ListedView, for a Cluster stand-in in tests).

WatchedView keeps, per kind, the few facts the planner and admission use (observed.py's
summaries), fed by informer.py's watch threads and by the responses to the operator's own
writes (store.py orders the two). It indexes pods by endpoint, keeps free capacity per node
up to date (ledger.py), tells the controller which endpoints a change concerns, and gives each
endpoint a fingerprint of everything its reconcile reads, so that a reconcile with nothing new
to read can be skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from darwin_operator import api, capacity, vocabulary
from darwin_operator.cluster import ApiError, Cluster
from darwin_operator.informer import Informer, Sink, Source, Summary
from darwin_operator.ledger import Ledger
from darwin_operator.observed import NodeInfo, ObservedPod, node_from_api, pod_from_api
from darwin_operator.store import Change, Key, Store

log = logging.getLogger(__name__)

OwnedHashes = tuple[tuple[str, str], ...]  # ("Kind/name", spec-hash annotation)
_FORBIDDEN_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class Capacity:
    """Nodes and what is free on them, for one admission batch."""

    nodes: list[NodeInfo]
    free_gpus: Callable[[str], dict[str, int]]
    free_room: Callable[[], dict[str, dict[str, int]]]


def _endpoint_label(meta: Mapping[str, Any]) -> str:
    return (meta.get("labels") or {}).get(vocabulary.LABEL_ENDPOINT, "")


def _owned_hashes(objects, uid: str) -> OwnedHashes:
    return tuple(
        (
            f"{o['kind']}/{o['metadata']['name']}",
            (o["metadata"].get("annotations") or {}).get(vocabulary.ANNOTATION_SPEC_HASH, ""),
        )
        for o in objects
        if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or ())
    )


class ListedView:
    """Reads by LIST at every reconcile (no watches)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.cluster.get_endpoint(namespace, name)

    async def endpoint_pods(self, namespace: str, name: str) -> list[ObservedPod]:
        return [pod_from_api(p) for p in await self.cluster.endpoint_pods(namespace, name)]

    async def owned_hashes(self, namespace: str, name: str, uid: str) -> OwnedHashes:
        return _owned_hashes(await self.cluster.owned_objects(namespace, name), uid)

    async def stored_revisions(self, namespace: str, name: str) -> list[dict[str, Any]] | None:
        return await self.cluster.stored_revisions(namespace, name)

    async def nodes_holding(self, pods: list[ObservedPod]) -> tuple[tuple[str, NodeInfo], ...]:
        listed = await self.cluster.list_nodes()
        return None if listed is None else tuple((n.name, n) for n in map(node_from_api, listed))

    async def capacity(self) -> Capacity:
        raw_nodes, raw_pods = await self.cluster.capacity_inputs()
        nodes = [node_from_api(o) for o in raw_nodes]
        pods = [pod_from_api(o) for o in raw_pods]
        return Capacity(
            nodes,
            lambda resource: capacity.free_gpus(nodes, pods, resource),
            lambda: capacity.free_room(nodes, pods),
        )

    async def synced(self) -> None:
        return None

    def fingerprint(self, namespace: str, name: str) -> Hashable | None:
        return None  # nothing is known between reads: never skip a reconcile

    def capacity_version(self) -> Hashable | None:
        return None


# ---- what is kept of each kind ----

PodEntry = tuple[str, ObservedPod]  # (endpoint label or "", summary)
OwnedEntry = tuple[str, str, tuple[str, ...]]  # (endpoint label, spec hash, owner uids)
RevisionEntry = tuple[str, dict[str, Any]]  # (endpoint label, the parts revisions.py reads)


def _key(meta: Mapping[str, Any], prefix: str = "") -> Key:
    return meta.get("namespace") or "", prefix + meta.get("name", "")


def summarize_pod(obj: dict[str, Any]) -> Summary:
    meta = obj.get("metadata") or {}
    label = _endpoint_label(meta)
    pod = pod_from_api(obj)
    # Finished pods of other workloads hold nothing: not kept.
    value = None if pod.terminal and not label else (label, pod)
    return _key(meta), meta.get("resourceVersion", ""), value


def summarize_node(obj: dict[str, Any]) -> Summary:
    meta = obj.get("metadata") or {}
    return _key(meta), meta.get("resourceVersion", ""), node_from_api(obj)


def _summarize_owned(kind: str) -> Callable[[dict[str, Any]], Summary]:
    def summarize(obj: dict[str, Any]) -> Summary:
        meta = obj.get("metadata") or {}
        entry = (
            _endpoint_label(meta),
            (meta.get("annotations") or {}).get(vocabulary.ANNOTATION_SPEC_HASH, ""),
            tuple(r.get("uid", "") for r in meta.get("ownerReferences") or ()),
        )
        return _key(meta, f"{kind}/"), meta.get("resourceVersion", ""), entry

    return summarize


def summarize_revision(obj: dict[str, Any]) -> Summary:
    meta = obj.get("metadata") or {}
    kept = {
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "labels", "ownerReferences") if k in meta
        },
        "data": obj.get("data"),
        "revision": obj.get("revision"),
    }
    return _key(meta), meta.get("resourceVersion", ""), (_endpoint_label(meta), kept)


_SELECTOR = vocabulary.LABEL_ENDPOINT  # labelled with an endpoint: the operator's objects
_KINDS = {  # kind -> (cluster-wide path, namespaced path, summary, label selector)
    "Pod": ("/api/v1/pods", "/api/v1/namespaces/{ns}/pods", summarize_pod, ""),
    "Node": ("/api/v1/nodes", None, summarize_node, ""),
    "Service": (
        "/api/v1/services",
        "/api/v1/namespaces/{ns}/services",
        _summarize_owned("Service"),
        _SELECTOR,
    ),
    "PodDisruptionBudget": (
        "/apis/policy/v1/poddisruptionbudgets",
        "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
        _summarize_owned("PodDisruptionBudget"),
        _SELECTOR,
    ),
    "ControllerRevision": (
        "/apis/apps/v1/controllerrevisions",
        "/apis/apps/v1/namespaces/{ns}/controllerrevisions",
        summarize_revision,
        _SELECTOR,
    ),
}


class WatchedView(Sink):
    def __init__(self, cluster: Cluster, namespaces: tuple[str, ...] = (), clock=time.time) -> None:
        self.cluster = cluster
        self.namespaces = tuple(namespaces)
        self.pods: Store[PodEntry] = Store(clock)
        self.nodes: Store[NodeInfo] = Store(clock)
        self.owned: Store[OwnedEntry] = Store(clock)
        self.revisions: Store[RevisionEntry] = Store(clock)
        self.endpoints: Store[dict[str, Any]] = Store(clock)
        self._stores: dict[str, Store] = {
            "Pod": self.pods,
            "Node": self.nodes,
            "Service": self.owned,
            "PodDisruptionBudget": self.owned,
            "ControllerRevision": self.revisions,
        }
        # (namespace, endpoint) -> keys of its pods / Services and PDB / revisions
        self._members: dict[Key, set[Key]] = {}
        self._owned_by: dict[Key, set[Key]] = {}
        self._revisions_by: dict[Key, set[Key]] = {}
        self._versions: dict[Key, int] = {}  # per endpoint: counts changes of what it reads
        self.ledger = Ledger()
        self.nodes_readable = True
        self.revisions_readable = True
        self.informers: list[Informer] = []
        self._unsynced: set[Source] = set()
        self._synced = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # set by the controller: an endpoint's inputs changed; GPUs were freed somewhere
        self.on_endpoint_changed: Callable[[str, str], None] = lambda ns, name: None
        self.on_capacity_freed: Callable[[], None] = lambda: None
        cluster.on_written = self.written

    # ---- starting ----

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for kind in _KINDS:
            scope: tuple[str | None, ...] = (None,)
            if self.namespaces and kind != "Pod" and _KINDS[kind][1]:
                scope = self.namespaces
            for ns in scope:  # pods: cluster-wide first (admission counts every workload's)
                self._start(self._source(kind, ns))

    def _source(self, kind: str, namespace: str | None) -> Source:
        wide, namespaced, summarize, selector = _KINDS[kind]
        path = wide if namespace is None else namespaced.format(ns=namespace)
        return Source(kind, path, summarize, selector)

    def _start(self, source: Source) -> None:
        self._unsynced.add(source)
        self._synced.clear()
        self.informers.append(Informer(self.cluster, source, self, self._loop).start())

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    async def synced(self) -> None:
        """Every watch has listed once."""
        await self._synced.wait()

    def _done(self, source: Source) -> None:
        self._unsynced.discard(source)
        if not self._unsynced:
            self._synced.set()

    # ---- Sink: called on the event loop ----

    def relisted(self, source: Source, summaries: list[Summary], rv: str) -> None:
        store = self._stores[source.kind]
        namespace = None
        if source.path != _KINDS[source.kind][0]:
            namespace = source.path.split("/namespaces/")[1].split("/")[0]
        prefix = self._prefix(source.kind)

        def within(key: Key) -> bool:
            return (namespace is None or key[0] == namespace) and key[1].startswith(prefix)

        changes = store.replace(((k, r, v) for k, r, v in summaries if v is not None), rv, within)
        for change in changes:
            self._changed(source.kind, change)
        self._done(source)

    def changed(self, source: Source, deleted: bool, summary: Summary) -> None:
        key, rv, value = summary
        store = self._stores[source.kind]
        change = store.remove(key, rv) if deleted or value is None else store.put(key, rv, value)
        if change is not None:
            self._changed(source.kind, change)

    def _prefix(self, kind: str) -> str:
        """Services and PDBs share a store: their keys' names begin with the kind."""
        return f"{kind}/" if self._stores[kind] is self.owned else ""

    def holds(self, source: Source, namespace: str, name: str, rv: str) -> bool:
        """Asked from a watch thread: is this event an echo of what a write of ours returned
        (or of what the watch showed already)?"""
        return self._stores[source.kind].holds((namespace, self._prefix(source.kind) + name), rv)

    def forbidden(self, source: Source) -> None:
        informer = next(i for i in self.informers if i.source == source)
        self.informers.remove(informer)
        if source.kind == "Pod" and source.path == _KINDS["Pod"][0] and self.namespaces:
            log.info("no cluster-wide pod reads: GPUs are counted in %s only", self.namespaces)
            for ns in self.namespaces:
                self._start(self._source("Pod", ns))
        elif source.kind == "Pod":  # nothing works without pods: reconciles wait for them
            assert self._loop is not None
            self._loop.call_later(_FORBIDDEN_RETRY_SECONDS, self._start, source)
            return
        elif source.kind == "Node":
            self.nodes_readable = False  # health skips node checks; admission says why
        elif source.kind == "ControllerRevision":
            self.revisions_readable = False
        self._done(source)

    def written(self, kind: str, obj: Mapping[str, Any]) -> None:
        """The object a write of ours returned: newer than what the watch has shown so far."""
        if obj.get("kind") == "Status" or not (obj.get("metadata") or {}).get("name"):
            return
        if kind == api.KIND:
            self.endpoint_seen(dict(obj))
            return
        store = self._stores.get(kind)
        if store is None:
            return
        meta = obj["metadata"]
        if store.holds(_key(meta, self._prefix(kind)), meta.get("resourceVersion")):
            return  # the watch showed this version first: nothing to summarize
        key, rv, value = _KINDS[kind][2](dict(obj))
        change = store.remove(key, rv) if value is None else store.put(key, rv, value)
        if change is not None:
            self._changed(kind, change)

    def endpoint_seen(self, obj: dict[str, Any], deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        key, rv = _key(meta), meta.get("resourceVersion", "")
        if deleted:
            self.endpoints.remove(key, rv)
        else:
            self.endpoints.put(key, rv, obj)

    # ---- keeping indexes, capacity and triggers ----

    def _changed(self, kind: str, change: Change) -> None:
        if kind == "Node":
            return self._node_changed(change)
        namespace = change.key[0]
        index = {"Pod": self._members, "ControllerRevision": self._revisions_by}.get(
            kind, self._owned_by
        )
        endpoints = {e[0] for e in (change.before, change.after) if e is not None and e[0]}
        for endpoint in endpoints:
            members = index.setdefault((namespace, endpoint), set())
            if change.after is not None and change.after[0] == endpoint:
                members.add(change.key)
            else:
                members.discard(change.key)
                if not members:
                    del index[(namespace, endpoint)]
            self._versions[(namespace, endpoint)] = self._versions.get((namespace, endpoint), 0) + 1
        if kind == "Pod":
            before = None if change.before is None else change.before[1]
            after = None if change.after is None else change.after[1]
            # a staging pod that finishes lets the groups of every endpoint using its copy start
            endpoints |= {n for p in (before, after) if p is not None for n in p.weights_for}
            self.ledger.pod(change.key, before, after)
            freed = (
                before is not None
                and before.extended
                and not before.terminal
                and (after is None or after.terminal)
            )
            if freed:
                self.on_capacity_freed()
        for endpoint in endpoints:
            self.on_endpoint_changed(namespace, endpoint)

    def _node_changed(self, change: Change) -> None:
        name = change.key[1]
        self.ledger.node(name, change.after)
        if change.after is not None:
            self.on_capacity_freed()  # new or changed: a waiting group may fit now
        was, now = change.before, change.after
        if was is None or now is None or was.ready != now.ready:
            # its pods' groups: lost with the node, or back (health.py's grace)
            for (namespace, _), (endpoint, pod) in self.pods.items():
                if endpoint and pod.node_name == name:
                    self.on_endpoint_changed(namespace, endpoint)

    # ---- reads of one reconcile ----

    async def endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.endpoints.get((namespace, name))
        if found is None:  # not seen by the watch yet: ask
            found = await self.cluster.get_endpoint(namespace, name)
            if found is not None:
                self.endpoint_seen(found)
        return found

    async def endpoint_pods(self, namespace: str, name: str) -> list[ObservedPod]:
        keys = self._members.get((namespace, name), ())
        return [entry[1] for entry in map(self.pods.get, keys) if entry is not None]

    async def owned_hashes(self, namespace: str, name: str, uid: str) -> OwnedHashes:
        found = []
        for key in sorted(self._owned_by.get((namespace, name), ())):
            entry = self.owned.get(key)
            if entry is not None and uid in entry[2]:
                found.append((key[1], entry[1]))
        return tuple(found)

    async def stored_revisions(self, namespace: str, name: str) -> list[dict[str, Any]] | None:
        if not self.revisions_readable:
            return None
        keys = self._revisions_by.get((namespace, name), ())
        return [entry[1] for entry in map(self.revisions.get, sorted(keys)) if entry is not None]

    async def nodes_holding(
        self, pods: list[ObservedPod]
    ) -> tuple[tuple[str, NodeInfo], ...] | None:
        """The nodes the pods are bound to (health.py looks at no other); one that is gone is
        left out. A node the watch has not shown yet is read: left out, it would count as
        lost."""
        if not self.nodes_readable:
            return None
        names = sorted({p.node_name for p in pods if p.node_name})
        for name in names:
            if self.nodes.get(("", name)) is None:
                found = await self.cluster.get_node(name)
                if found is not None:
                    self.written("Node", found)
        return tuple((n, info) for n in names if (info := self.nodes.get(("", n))) is not None)

    async def capacity(self) -> Capacity:
        if not self.nodes_readable:
            raise ApiError(403, "Forbidden", "the operator may not list and watch nodes")
        return Capacity(
            list(self.ledger.nodes.values()), self.ledger.free_gpus, self.ledger.free_room
        )

    def capacity_version(self) -> Hashable | None:
        """Changes whenever what fits may have changed (what a waiting endpoint reads)."""
        return self.ledger.version

    def fingerprint(self, namespace: str, name: str) -> Hashable | None:
        """Changes whenever anything the endpoint's reconcile reads changes: the endpoint, its
        pods, Services, PDB and revisions, and the nodes holding its pods."""
        endpoint = self.endpoints.get((namespace, name))
        if endpoint is None:
            return None
        pods = [e[1] for e in map(self.pods.get, self._members.get((namespace, name), ())) if e]
        nodes = tuple(sorted({p.node_name for p in pods if p.node_name}))
        return (
            endpoint["metadata"].get("resourceVersion"),
            self._versions.get((namespace, name), 0),
            tuple(self.nodes.get(("", n)) for n in nodes),
        )
