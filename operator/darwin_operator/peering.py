"""High availability: several operator replicas, one active, through kopf's peering.

kopf pauses an operator while a live peer of higher priority keeps writing keep-alives into the
peering object, and pauses *every* operator of equal priority. So a fixed priority cannot serve
replicas of one Deployment, and a random one leaves a window at start in which a newcomer of
higher priority acts before the active replica has seen it. Instead each replica registers
before kopf starts, with a priority strictly below every peer already in the object, written
with a resourceVersion precondition (a conflict means someone registered meanwhile: retry).
Registrations are thereby totally ordered: the oldest live replica is the active one, and a
newcomer, which sees its elders when kopf first lists the object, never acts beside them.

A standby takes over when the active replica's keep-alive expires: at most `lifetime` seconds
after its last one, which kopf renews 5-10 s before expiry.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from darwin_operator.cluster import Cluster

log = logging.getLogger(__name__)

GROUP, VERSION = "kopf.dev", "v1"
T = TypeVar("T")


@dataclass(frozen=True)
class PeeringObject:
    name: str
    namespace: str | None  # None: the ClusterKopfPeering of a cluster-wide operator

    @property
    def path(self) -> str:
        if self.namespace is None:
            return f"/apis/{GROUP}/{VERSION}/clusterkopfpeerings"
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/kopfpeerings"

    @property
    def kind(self) -> str:
        return "ClusterKopfPeering" if self.namespace is None else "KopfPeering"


def priority_below(peers: dict, identity: str) -> int:
    """A priority strictly below every other registered peer (0 for the first one)."""
    others = [
        int(entry.get("priority", 0))
        for peer, entry in peers.items()
        if peer != identity and isinstance(entry, dict)
    ]
    return min(others, default=1) - 1


def _get_or_create(cluster: Cluster, obj: PeeringObject) -> dict:
    found = cluster.request_sync("GET", f"{obj.path}/{obj.name}", fine=[404])
    if found is not None:
        return found
    metadata = {"name": obj.name} | ({"namespace": obj.namespace} if obj.namespace else {})
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": obj.kind, "metadata": metadata}
    # 409 AlreadyExists: another replica created it first
    created = cluster.request_sync("POST", obj.path, body=body, fine=[409])
    return created if created is not None else cluster.request_sync("GET", f"{obj.path}/{obj.name}")


def _entry(priority: int, lifetime: int) -> dict:
    now = datetime.datetime.now(datetime.UTC).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": now}


def register(cluster: Cluster, objects: list[PeeringObject], identity: str, lifetime: int) -> int:
    """Register `identity` below all current peers; returns the priority to give kopf.

    The order is decided in the first object alone; the others (one per watched namespace)
    get the same priority, so every object ranks the replicas alike.
    """
    first, *rest = objects
    while True:
        current = _get_or_create(cluster, first)
        priority = priority_below(current.get("status") or {}, identity)
        patch = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "status": {identity: _entry(priority, lifetime)},
        }
        registered = cluster.request_sync(
            "PATCH",
            f"{first.path}/{first.name}",
            body=patch,
            content_type="application/merge-patch+json",
            fine=[409],  # Conflict: someone registered meanwhile
        )
        if registered is not None:
            break
        log.info("peering %s changed while registering; retrying", first.name)
    for obj in rest:
        _get_or_create(cluster, obj)
        cluster.request_sync(
            "PATCH",
            f"{obj.path}/{obj.name}",
            body={"status": {identity: _entry(priority, lifetime)}},
            content_type="application/merge-patch+json",
        )
    log.info("peering %s: registered %s with priority %d", first.name, identity, priority)
    return priority


def own_identity() -> str:
    """The name this replica registers under: the pod's name in the cluster (POD_ID, from the
    downward API, as kopf reads it), else one unique to this process."""
    pod = os.environ.get("POD_ID")
    return pod or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


def peering_objects(name: str, namespaces: list[str]) -> list[PeeringObject]:
    """Where kopf peers: one ClusterKopfPeering cluster-wide, else a KopfPeering per namespace."""
    if not namespaces:
        return [PeeringObject(name, None)]
    return [PeeringObject(name, namespace) for namespace in sorted(namespaces)]


class ActivityGuard:
    """Whether this replica may act now, by kopf's own rule, from a recent read of the peering
    object: no other live peer (last keep-alive within its lifetime) of equal or higher priority.

    kopf pauses its watches when outranked, but the per-endpoint workers it already triggered
    keep resyncing on their own. That matters when an active replica is outranked after all (it
    stalled past its lifetime, a standby took over, then it came back): each reconcile asks this
    guard first. Peer deaths are judged at call time, so a takeover is not delayed by polling;
    a newly live peer is seen within `poll_seconds`.
    """

    def __init__(
        self, cluster: Cluster, obj: PeeringObject, identity: str, priority: int, poll_seconds=2.0
    ) -> None:
        self.cluster, self.obj, self.identity, self.priority = cluster, obj, identity, priority
        self.poll_seconds = poll_seconds
        self._peers: dict = {}

    def start(self) -> ActivityGuard:
        self.refresh()
        threading.Thread(target=self._poll, name="peering-guard", daemon=True).start()
        return self

    def refresh(self) -> None:
        self._peers = (
            self.cluster.request_sync("GET", f"{self.obj.path}/{self.obj.name}").get("status") or {}
        )

    def _poll(self) -> None:
        while True:
            time.sleep(self.poll_seconds)
            try:
                self.refresh()
            except Exception as e:  # keep the last view; deadlines still expire on it
                log.debug("peering guard could not read %s: %s", self.obj.name, e)

    def active(self, now: datetime.datetime | None = None) -> bool:
        now = now or datetime.datetime.now(datetime.UTC)
        for peer, entry in self._peers.items():
            if peer == self.identity or not isinstance(entry, dict):
                continue
            if int(entry.get("priority", 0)) < self.priority or "lastseen" not in entry:
                continue
            lastseen = datetime.datetime.fromisoformat(entry["lastseen"])
            lastseen = lastseen if lastseen.tzinfo else lastseen.replace(tzinfo=datetime.UTC)
            if lastseen + datetime.timedelta(seconds=int(entry.get("lifetime", 60))) > now:
                return False
        return True

    def wrap(self, reconcile: Callable[[str, str], Awaitable[T]], idle: T):
        """`reconcile`, run only while active; outranked, it does nothing and returns `idle`.
        A refusal is checked against a fresh read first: the cached view may still hold a
        keep-alive that its owner withdrew on a graceful exit."""

        async def reconcile_if_active(namespace: str, name: str) -> T:
            if not self.active():
                try:
                    await asyncio.to_thread(self.refresh)
                except Exception as e:
                    log.debug("peering guard could not read %s: %s", self.obj.name, e)
                if not self.active():
                    return idle
            return await reconcile(namespace, name)

        return reconcile_if_active
