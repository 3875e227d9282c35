"""The watched view: pods by endpoint, our own writes seen at once, triggers and fingerprints.

The watch threads are left out: the view is fed as they feed it (relisted, changed) and as
cluster.py tells it of its writes' responses (written)."""

from __future__ import annotations

import asyncio
import copy

from darwin_operator import render
from darwin_operator.informer import Source
from darwin_operator.view import WatchedView, summarize_node, summarize_pod
from darwin_operator.vocabulary import LABEL_ROLE, LABEL_WEIGHTS
from tests.unit.fake_cluster import node
from tests.unit.planner_fixtures import REF, make_spec, revision

PODS = Source("Pod", "/api/v1/pods", summarize_pod)
NODES = Source("Node", "/api/v1/nodes", summarize_node)
GPU = "nvidia.com/gpu"


class Writer:
    on_written = None


def pod_object(index: int, rv: str, *, node_name: str = "", gated: bool = True) -> dict:
    spec = make_spec()
    (obj,) = render.render_group(REF, spec, revision(spec), index, gated=gated)[:1]
    obj["metadata"]["ownerReferences"][0]["uid"] = REF.uid
    obj["metadata"]["resourceVersion"] = rv
    obj["metadata"]["creationTimestamp"] = "2025-06-15T00:00:00Z"
    if node_name:
        obj["spec"]["nodeName"] = node_name
        obj["status"] = {"phase": "Running"}
    return obj


def endpoint(rv: str) -> dict:
    return {"metadata": {"name": REF.name, "namespace": REF.namespace, "resourceVersion": rv}}


def synced_view() -> tuple[WatchedView, list]:
    view = WatchedView(Writer(), ())  # type: ignore[arg-type]
    triggered: list = []
    view.on_endpoint_changed = lambda ns, name: triggered.append((ns, name))
    view.on_capacity_freed = lambda: triggered.append("freed")
    view.relisted(NODES, [summarize_node(node("kwok-node-0"))], "1")
    view.relisted(PODS, [], "1")
    view.endpoint_seen(endpoint("2"))
    triggered.clear()
    return view, triggered


def pods_of(view: WatchedView) -> list:
    return asyncio.run(view.endpoint_pods(REF.namespace, REF.name))


def test_a_pod_the_operator_created_is_seen_before_the_watch_shows_it():
    view, triggered = synced_view()
    before = view.fingerprint(REF.namespace, REF.name)
    view.written("Pod", pod_object(0, "10"))
    assert [p.name for p in pods_of(view)] == [f"{REF.name}-0-0"]
    assert view.fingerprint(REF.namespace, REF.name) != before
    assert triggered == [(REF.namespace, REF.name)]
    # the watch catches up with the same object: nothing new, no trigger
    after = view.fingerprint(REF.namespace, REF.name)
    view.changed(PODS, False, summarize_pod(pod_object(0, "10")))
    assert view.fingerprint(REF.namespace, REF.name) == after
    assert triggered == [(REF.namespace, REF.name)]


def test_the_watch_passes_over_the_echo_of_a_pod_the_operator_created():
    view, _ = synced_view()
    name = f"{REF.name}-0-0"
    assert not view.holds(PODS, REF.namespace, name, "10")
    view.written("Pod", pod_object(0, "10"))
    assert view.holds(PODS, REF.namespace, name, "10")  # the echo: nothing to parse
    assert view.holds(PODS, REF.namespace, name, "9")
    assert not view.holds(PODS, REF.namespace, name, "11")  # changed since: parsed
    assert not view.holds(PODS, "elsewhere", name, "10")
    owned = Source("Service", "/api/v1/services", summarize_pod)
    assert not view.holds(owned, REF.namespace, name, "10")  # another kind, another store


def test_a_lifted_gate_counts_against_capacity_at_once_and_a_late_event_cannot_undo_it():
    view, _ = synced_view()
    gated = pod_object(0, "10")
    view.changed(PODS, False, summarize_pod(gated))
    assert view.ledger.free_gpus(GPU) == {"kwok-node-0": 8}
    released = copy.deepcopy(gated)
    released["spec"]["schedulingGates"] = []
    released["metadata"]["resourceVersion"] = "11"
    view.written("Pod", released)
    assert view.ledger.free_gpus(GPU) == {"kwok-node-0": 2}
    view.changed(PODS, False, summarize_pod(gated))  # the watch, behind
    assert view.ledger.free_gpus(GPU) == {"kwok-node-0": 2}
    assert not pods_of(view)[0].gated


def test_a_pod_gone_frees_capacity_and_wakes_its_endpoint():
    view, triggered = synced_view()
    bound = pod_object(0, "10", node_name="kwok-node-0", gated=False)
    view.changed(PODS, False, summarize_pod(bound))
    assert view.ledger.free_gpus(GPU) == {"kwok-node-0": 2}
    triggered.clear()
    view.changed(PODS, True, summarize_pod({**bound, "metadata": {**bound["metadata"]}}))
    assert view.ledger.free_gpus(GPU) == {"kwok-node-0": 8}
    assert "freed" in triggered and (REF.namespace, REF.name) in triggered
    assert pods_of(view) == []


def test_a_node_turning_not_ready_wakes_the_endpoints_with_pods_on_it():
    view, triggered = synced_view()
    view.changed(PODS, False, summarize_pod(pod_object(0, "10", node_name="kwok-node-0")))
    before = view.fingerprint(REF.namespace, REF.name)
    triggered.clear()
    lost = node("kwok-node-0")
    lost["status"]["conditions"][0]["status"] = "False"
    lost["metadata"]["resourceVersion"] = "20"
    view.changed(NODES, False, summarize_node(lost))
    assert (REF.namespace, REF.name) in triggered
    assert view.fingerprint(REF.namespace, REF.name) != before
    nodes = asyncio.run(view.nodes_holding(pods_of(view)))
    assert [(name, info.ready) for name, info in nodes] == [("kwok-node-0", False)]


def test_a_relist_drops_pods_deleted_while_the_watch_was_away():
    view, triggered = synced_view()
    view.changed(PODS, False, summarize_pod(pod_object(0, "10")))
    view.changed(PODS, False, summarize_pod(pod_object(1, "11")))
    view.relisted(PODS, [summarize_pod(pod_object(1, "11"))], "30")
    assert [p.name for p in pods_of(view)] == [f"{REF.name}-1-0"]


def test_heartbeats_of_a_node_change_nothing():
    view, triggered = synced_view()
    version = view.capacity_version()
    beat = node("kwok-node-0")
    beat["metadata"]["resourceVersion"] = "40"
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2025-06-15T00:00:10Z"
    view.changed(NODES, False, summarize_node(beat))
    assert triggered == [] and view.capacity_version() == version


def staging_pod(rv: str, phase: str) -> dict:
    owners = [
        {"apiVersion": "serving.darwin.ai/v1alpha1", "kind": "DarwinEndpoint", "name": n}
        for n in (REF.name, "adopter")
    ]
    return {
        "metadata": {
            "name": "weights-abc-kwok-node-0-0",
            "namespace": REF.namespace,
            "resourceVersion": rv,
            "labels": {LABEL_ROLE: "staging", LABEL_WEIGHTS: "abc"},
            "ownerReferences": owners,
        },
        "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "staging"}]},
        "status": {"phase": phase},
    }


def test_a_staging_pod_wakes_every_endpoint_that_owns_it_until_it_is_done():
    view, triggered = synced_view()
    view.changed(PODS, False, summarize_pod(staging_pod("10", "Running")))
    assert set(triggered) == {(REF.namespace, REF.name), (REF.namespace, "adopter")}
    triggered.clear()
    view.changed(PODS, False, summarize_pod(staging_pod("11", "Succeeded")))  # the copy is made
    assert set(triggered) == {(REF.namespace, REF.name), (REF.namespace, "adopter")}
    assert pods_of(view) == []  # never a group member
