"""A reconcile whose inputs did not change since one that wrote nothing is skipped; any change
to what it reads (a pod, the endpoint) makes the next one run in full."""

from __future__ import annotations

import asyncio
import copy
import itertools

from darwin_operator import metrics
from darwin_operator.informer import Source
from darwin_operator.reconciler import Reconciler
from darwin_operator.view import WatchedView, summarize_node, summarize_pod
from tests.specs import endpoint_manifest
from tests.unit.fake_cluster import FakeCluster, endpoint_object

PODS = Source("Pod", "/api/v1/pods", summarize_pod)
NODES = Source("Node", "/api/v1/nodes", summarize_node)


class Watched(FakeCluster):
    """FakeCluster whose writes reach a WatchedView as the API server's responses would."""

    def __init__(self, endpoint) -> None:
        super().__init__(endpoint)
        self.versions = itertools.count(10)
        self.view = WatchedView(self, ())  # type: ignore[arg-type]
        self.view._synced.set()
        self.view.relisted(NODES, [summarize_node(n) for n in self.nodes], "1")
        self.endpoint["metadata"]["resourceVersion"] = "2"
        self.view.endpoint_seen(copy.deepcopy(self.endpoint))

    def stamped(self, obj):
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        return obj

    async def apply(self, obj):
        self.view.written(obj["kind"], self.stamped(obj))

    async def store_revision(self, obj):
        await super().store_revision(obj)
        self.view.written("ControllerRevision", self.stamped(obj))

    async def patch_status(self, namespace, name, status):
        await super().patch_status(namespace, name, status)
        self.endpoint = self.stamped(self.endpoint)
        self.view.written("DarwinEndpoint", self.endpoint)

    async def write_pods(self, namespace, pod_writes):
        done = await super().write_pods(namespace, pod_writes)
        self.watch()
        return done

    def watch(self) -> None:
        """The pod watch catches up with every pod as it is now."""
        listed = []
        for pod in self.pods.values():
            stamped = self.stamped(pod)
            pod["metadata"]["resourceVersion"] = stamped["metadata"]["resourceVersion"]
            listed.append(summarize_pod(stamped))
        self.view.relisted(PODS, listed, str(next(self.versions)))


def test_resyncs_at_rest_are_skipped_until_something_they_read_changes():
    manifest = endpoint_manifest("at-rest", replicas=2, ready_after="1s")
    cluster = Watched(endpoint_object("at-rest", "ns", manifest["spec"]))
    now = [1000.0]
    reconciler = Reconciler(cluster, clock=lambda: now[0], view=cluster.view)  # type: ignore[arg-type]

    async def reconcile_and_post():
        result = await reconciler.reconcile("ns", "at-rest")
        await reconciler.events_posted()  # before asyncio.run ends (and cancels them)
        return result

    def reconcile():
        now[0] += 3
        return asyncio.run(reconcile_and_post())

    def counted(result: str) -> float:
        return metrics.RECONCILE_TOTAL.labels(result)._value.get()

    for step in range(4):  # create, admit, bound, Ready: each writes
        reconcile()
        if step == 1:
            cluster.bind_all(now[0])
        if step == 2:
            cluster.ready_all(now[0])
        cluster.watch()
    status = cluster.endpoint["status"]
    assert (status["phase"], status["readyReplicas"]) == ("Ready", 2)

    reconcile()  # finds nothing to do and writes nothing
    ran, skipped, events = counted("success"), counted("unchanged"), len(cluster.events)
    for _ in range(5):
        reconcile()
    assert (counted("success") - ran, counted("unchanged") - skipped) == (0, 5)
    assert len(cluster.events) == events

    # a pod turns unready: the next reconcile runs and reports it
    for pod in cluster.pods.values():
        pod["status"]["conditions"][-1]["status"] = "False"
        break
    cluster.watch()
    reconcile()
    assert cluster.endpoint["status"]["readyReplicas"] == 1
